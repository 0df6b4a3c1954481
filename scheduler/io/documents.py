"""One spec document with its position, the size limit, and the choice of reader per file.

A document keeps its plain data and the line where it starts. The line of a field inside it
is found only when an error names that field (``Document.line_of``): a YAML document keeps
its span of the file and is composed again then, so a 100k-document load pays for positions
only on the documents that fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.errors import SpecError

#: Larger spec files are refused before reading: a 64 MB file holds about 300k small Job documents.
MAX_SPEC_BYTES = 64 * 1024 * 1024
#: A 64 MB file of the smallest valid Job documents holds about half a million of them.
MAX_DOCUMENTS = 1_000_000
#: Files read as JSON Lines (one JSON document per line); every other file is YAML.
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")

#: ``progress(stage, done, total)``: long loads report documents read and validated (the CLI's bar).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a spec file: its plain data, and where it is.

    ``line`` is the 1-based line where its content starts. A YAML document also keeps the
    whole file's text (shared by its documents, not copied) and its span in it, so that
    ``line_of`` can compose it again to find a field; a JSON Lines document is one line.
    """

    file: str
    data: Any
    line: int
    text: str | None = field(default=None, repr=False, compare=False)
    start: int = 0  # offset of the first line of the document's content in ``text``
    end: int = 0  # offset just past its content

    def line_of(self, loc: tuple[str | int, ...]) -> int:
        """Line of the deepest node along ``loc`` that exists (falls back to its parents)."""
        if self.text is None:
            return self.line
        from scheduler.io.yamldocs import line_in_span

        return self.line + line_in_span(self.text[self.start : self.end], loc)


def read_bytes(path: str | Path, *, max_bytes: int | None = None) -> bytes:
    """A spec file's bytes, refused with one line when missing, a directory or over the size limit
    (``MAX_SPEC_BYTES`` unless ``max_bytes`` is given)."""
    max_bytes = MAX_SPEC_BYTES if max_bytes is None else max_bytes
    name = str(path)
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise SpecError(name, "no such file") from None
    except OSError as exc:
        raise SpecError(name, f"cannot read: {exc.strerror}") from None
    if p.is_dir():
        raise SpecError(name, "is a directory, expected a YAML or JSON Lines file")
    if size > max_bytes:
        raise SpecError(name, f"file too large ({size / 2**20:.1f} MiB > {max_bytes / 2**20:.0f} MiB limit)")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise SpecError(name, f"cannot read: {exc.strerror}") from None


def decode_utf8(raw: bytes, file: str) -> str:
    """Strict UTF-8: a spec with a stray byte is refused, not guessed at."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(file, f"not valid UTF-8 (byte {exc.start})") from None


def is_json_lines(path: str | Path) -> bool:
    return Path(path).suffix.lower() in JSON_LINES_SUFFIXES


def load_documents(path: str | Path, progress: Progress | None = None) -> list[Document]:
    """Every document of a spec file: JSON Lines for ``.jsonl``/``.ndjson``, YAML otherwise."""
    raw = read_bytes(path)
    name = str(path)
    if is_json_lines(path):
        from scheduler.io.jsonlines import parse_json_lines

        return parse_json_lines(raw, name, progress)
    from scheduler.io.yamldocs import parse_documents

    return parse_documents(decode_utf8(raw, name), name, progress)


class FieldError(SpecError):
    """A ``SpecError`` at a field of a document whose line is found only when it is read.

    Finding a YAML field's line composes its document again; a file with an error in each
    of 100k documents prints the first twenty (see the CLI), so the others never pay for it.
    """

    def __init__(self, doc: Document, loc: tuple[str | int, ...], reason: str, field: str | None = None) -> None:
        self.doc = doc
        self.loc = loc
        self._line: int | None = None
        self.file = doc.file
        self.field = field
        self.reason = reason
        Exception.__init__(self, doc.file, reason)  # the message is built on demand (``__str__``)

    @property
    def line(self) -> int:
        if self._line is None:
            self._line = self.doc.line_of(self.loc) if self.loc else self.doc.line
        return self._line

    @line.setter
    def line(self, value: int | None) -> None:
        self._line = value

    def __str__(self) -> str:
        return self.one_line()
