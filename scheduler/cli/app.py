"""Shared pieces of the ``mcsched`` command line: the typer app, consoles, options, helpers.

Command modules register on ``app``; ``scheduler.cli.main`` runs it and turns every
``MCSchedError`` into one line and an exit code.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from scheduler.errors import MCSchedError, SpecError, UnknownJobError
from scheduler.paths import default_catalog, default_contract

if TYPE_CHECKING:
    from rich.console import Console

    from scheduler.decision import Decision
    from scheduler.specs import CloudCatalog, Contract

app = typer.Typer(
    name="mcsched",
    help="Multi-cloud scheduler for LLM jobs with an Azure right of first refusal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        from scheduler.build_info import core_build

        print(f"mcsched {version('mcsched')}")
        print(f"placement core: {core_build()}")
        raise typer.Exit()


@app.callback()
def _root(
    _version_flag: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Multi-cloud scheduler for LLM jobs with an Azure right of first refusal."""


audit_app = typer.Typer(help="Inspect and verify the audit ledger.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


class LazyConsole:
    """A rich ``Console`` made on first use, standing in for it (every attribute is the console's).

    Importing rich's console is a fixed cost of every run, and most runs never need it:
    ``plan -o json`` prints with ``print``, and its progress bars stay off when stderr is
    not a terminal, which ``is_terminal`` can often tell without rich (see there).
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    @property
    def is_terminal(self) -> bool:
        """rich's answer, without building the console when no answer but False is possible.

        rich says True only for ``TTY_COMPATIBLE=1``, a non-empty ``FORCE_COLOR``, or a
        file whose ``isatty()`` is true; when none of these holds it says False.
        """
        if self._console is None and not (
            os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR") or _isatty(self._stream())
        ):
            return False
        return self.console.is_terminal

    def _stream(self) -> Any:
        return sys.stderr if self._options.get("stderr") else sys.stdout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed (rich says False then too)
        return False


# Typed as the Console they stand in for: callers use them as one.
out = cast("Console", LazyConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 200))
err = cast("Console", LazyConsole(stderr=True, soft_wrap=True, highlight=False))


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    NDJSON = "ndjson"


def print_decisions(decisions: Sequence[Decision], output: OutputFormat, explain: bool, title: str | None = None) -> None:
    """Decisions on stdout: a rich table, a JSON array (one decision a line), or NDJSON."""
    if output is OutputFormat.TABLE:
        from scheduler.render import decisions_table

        out.print(decisions_table(decisions, explain, title=title))
        return
    from scheduler.render import json_chunks, ndjson_chunks

    chunks = itertools.chain(json_chunks(decisions, explain), [b"\n"]) if output is OutputFormat.JSON else ndjson_chunks(decisions, explain)
    binary = getattr(sys.stdout, "buffer", None)  # a text stream without one (a StringIO) gets text
    sys.stdout.flush()
    if binary is None:
        sys.stdout.write(b"".join(chunks).decode())
        sys.stdout.flush()
        return
    binary.writelines(chunks)
    binary.flush()


#: A command that finds more spec errors than this prints this many and a count (a 50 MB file
#: with an error in every document would otherwise print a line per document).
MAX_ERRORS_SHOWN = 20


def print_spec_errors(errors: Sequence[SpecError], limit: int = MAX_ERRORS_SHOWN) -> None:
    """The first ``limit`` errors one line each on stderr, then ``... and N more errors (T in total)``."""
    for e in errors[:limit]:
        err.print(e.one_line(), markup=False, highlight=False)
    if len(errors) > limit:
        err.print(f"... and {len(errors) - limit} more errors ({len(errors)} in total)", markup=False, highlight=False)


CatalogOpt = Annotated[Path | None, typer.Option("--clouds", help="CloudCatalog YAML (default: shipped example).")]
ContractOpt = Annotated[Path | None, typer.Option("--contract", help="Contract YAML (default: shipped example).")]


#: Long CLI work (loading or planning this many documents, submitting many jobs) shows a bar.
PROGRESS_THRESHOLD = 10_000


@contextlib.contextmanager
def progress(label: str, total: int, *, threshold: int = PROGRESS_THRESHOLD) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for long work; a no-op when stderr is not a terminal or the work is small.

    Yields ``advance(n)``. Updates are batched (about 200 per bar), so per-item calls stay cheap.
    """
    if total < threshold or not err.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    step = max(1, total // 200)
    pending = 0
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(n: int) -> None:
            nonlocal pending
            pending += n
            if pending >= step:
                bar.advance(task, pending)
                pending = 0

        yield advance
        bar.advance(task, pending)


@contextlib.contextmanager
def stage_progress(threshold: int = PROGRESS_THRESHOLD) -> Iterator[Callable[[str, int, int], None]]:
    """Bars for staged work that reports ``(stage, done, total)`` (loading: reading, validating).

    A stage gets a bar once its total reaches ``threshold``, only on a terminal; redraws
    are throttled to about 200 per bar, so the per-document calls stay cheap.
    """
    if not err.is_terminal:
        yield lambda stage, done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True)
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        if total < threshold or (done % max(1, total // 200) and done != total):
            return
        if stage not in tasks:
            if not tasks:
                bar.start()
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        yield report
    finally:
        if tasks:
            bar.stop()


@contextlib.contextmanager
def busy(message: str, size: int, threshold: int = PROGRESS_THRESHOLD) -> Iterator[None]:
    """A spinner with elapsed time for one long step that cannot report progress (placing a batch)."""
    if size < threshold or not err.is_terminal:
        yield
        return
    with err.status(message):
        yield


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, markup=False)
    return typer.Exit(code)


def load_config(clouds: Path | None, contract: Path | None) -> tuple[CloudCatalog, Contract]:
    """The catalog and contract a command runs against (the shipped examples by default).

    The loader (pydantic's spec models) is imported here, not at module level: commands
    that never read a spec (``env``, ``down``, ``audit``, ``--help``) start without it.
    """
    from scheduler.loading import load_catalog, load_contract

    catalog = load_catalog(clouds or default_catalog())
    return catalog, load_contract(contract or default_contract(), catalog)



# Ray is imported lazily (inside these helpers) so offline commands start fast without a cluster.

StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="State directory (default $MCSCHED_HOME or ~/.mcsched).")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray GCS address (default: RAY_ADDRESS or the local cluster).")]


def _state(state_dir: Path | None) -> Path:
    from scheduler.paths import state_dir as default_state

    return (state_dir or default_state()).expanduser().resolve()


def _connect(address: str | None, state_dir: Path | None, *, embedded: bool = False, stream: bool = False) -> None:
    from scheduler.errors import RuntimeUnavailable
    from scheduler.runtime.cluster import connect, no_cluster, resolve_address, up

    state = _state(state_dir)
    resolved = resolve_address(address, state)
    if resolved is None:
        if not embedded:
            raise RuntimeUnavailable(no_cluster(state))
        err.print("no Ray cluster found; starting the embedded default (`mcsched up`) ...", markup=False)
        catalog, the_contract = load_config(None, None)
        info = up(catalog, the_contract, state, log=lambda m: err.print(m, markup=False)).info
        err.print(f"the cluster keeps running (state in {state}): `mcsched env` prints Ray's exports, `mcsched down` stops it", markup=False)
        resolved = info.gcs_address
    connect(resolved, log_to_driver=stream)


#: Why a job just submitted may be unknown: `mcsched submit` and `ray job submit --no-wait` return
#: once Ray has the job; the scheduler learns of it only when that Ray job's driver starts.
UNKNOWN_JOB_HINT = (
    "a job reaches the scheduler when its Ray job's driver starts, a few seconds after "
    "`mcsched submit` or `ray job submit` (`ray job list` shows it meanwhile)"
)


def remote_error(cause: BaseException | None, raised: BaseException) -> MCSchedError:
    """The one-line error for a failed actor call (``cause``: what the actor raised, if Ray kept it).

    An unknown job keeps its type (and exit code) and says why a job submitted a moment ago
    is not known yet, which is what a user who runs `status` right after `submit` meets.
    """
    text = str(cause if cause is not None else raised)
    first = text.splitlines()[0] if text else type(cause or raised).__name__
    if isinstance(cause, UnknownJobError):
        return UnknownJobError(f"{first}: {UNKNOWN_JOB_HINT}")
    error = MCSchedError(first)
    if isinstance(cause, MCSchedError):  # the actor's refusal keeps its exit code (2: an unknown cloud, say)
        error.exit_code = cause.exit_code
    return error


def _call(method: str, *args: object) -> object:
    """Call the scheduler actor; its errors (unknown job, ...) become one-line MCSchedErrors."""
    import ray

    from scheduler.runtime.actor import get_actor

    try:
        return ray.get(getattr(get_actor(), method).remote(*args))
    except ray.exceptions.RayTaskError as exc:
        raise remote_error(exc.cause, exc) from None
