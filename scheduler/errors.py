"""One exception tree for mcsched.

The CLI translates every ``MCSchedError`` into a one-line message and an exit code, so
user mistakes never surface as tracebacks. Anything that is *not* an ``MCSchedError`` is a
bug and is allowed to crash loudly.
"""

from __future__ import annotations


class MCSchedError(Exception):
    """Root of every error mcsched raises on purpose."""

    exit_code: int = 1


class SpecError(MCSchedError):
    """A spec file is malformed or inconsistent; points at file, line and field."""

    exit_code = 2

    def __init__(self, file: str, reason: str, *, line: int | None = None, field: str | None = None) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class SpecErrors(MCSchedError):
    """Several spec problems found in one pass, reported one line each."""

    exit_code = 2

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__(errors)

    def __str__(self) -> str:
        # Built when read, not raised: each line may compose its document again to find a
        # field's line, and a CLI shows only the first few of thousands (``scheduler.cli.app``).
        return "\n".join(e.one_line() for e in self.errors)


class UsageError(MCSchedError):
    """An option's value the command cannot use, found past the option parser (a URL it will
    not send to, say): exit 2, as the parser's own usage errors."""

    exit_code = 2


class AdmissionError(MCSchedError):
    """The engine refuses a request (duplicate job, unknown job, infeasible shape)."""

    exit_code = 2


class UnknownJobError(AdmissionError):
    """A command named a job the scheduler has never seen."""


class LedgerError(MCSchedError):
    """The ledger cannot be opened or written."""


class LedgerInputError(LedgerError):
    """A ledger command was given what it cannot use: a ledger that is not there, a size the log
    never had, a file it would overwrite. Bad input (exit 2), never bad evidence (exit 1): a
    typo must not look like tampering."""

    exit_code = 2


class LedgerCorrupt(LedgerError):
    """Verification found a bad record; ``seq`` names the first one."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"record {seq}: {reason}")


class RuntimeUnavailable(MCSchedError):
    """The Ray cluster or the scheduler actor cannot be reached."""

    exit_code = 3


class ApiKeyError(MCSchedError):
    """An API key command or the key file is wrong (unknown or duplicate name, unreadable file)."""

    exit_code = 2


class TraceError(MCSchedError):
    """A workload or capacity trace cannot be read."""

    exit_code = 2
