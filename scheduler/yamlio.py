"""Safe, fast YAML loading that can still say where every value came from.

Specs are user input, so loading is defensive: a size cap, strict UTF-8, no aliases or
anchors (which defeats "billion laughs" bombs), a nesting limit, no duplicate keys, and line
numbers for every field so validation errors can say ``file:line: field: why``.

It is also one pass over the file with libyaml (PyYAML's C parser and composer), so a file
of 100k jobs loads in seconds: each document's node tree is composed in C and turned into
plain data by one small walk that also enforces the rules above; only the document's span
is kept. The rare document that needs a line number for an error is composed again from
its span (see ``Document.line_of``), so memory stays proportional to the data, not to
libyaml's node and mark objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml import MappingNode, Node, ScalarNode, SequenceNode

from scheduler.errors import SpecError
from scheduler.gcpause import no_gc

MAX_SPEC_BYTES = 64 * 1024 * 1024
#: A 64 MB file of the smallest valid Job documents holds about half a million of them.
MAX_DOCUMENTS = 1_000_000
#: Deeper than any spec needs (a Job is 3 levels); libyaml itself stops at 1000.
MAX_DEPTH = 64

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # pure-Python fallback without libyaml
_STR, _INT, _FLOAT, _NULL, _BOOL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "null", "bool"))
_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"
_RESOLVED_CACHE = 65_536


class _Loader(_Base):  # type: ignore[misc]
    """libyaml's safe loader, with the per-scalar Python hooks its composer calls made cheap.

    The composer asks ``resolve`` for the tag of every scalar and calls the path-resolver
    hooks around every node; specs repeat the same keys and values thousands of times, and
    path resolvers are unused, so tags are cached and the hooks do nothing.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[str, str] = {}

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is ScalarNode and implicit[0]:
            tag = self._tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(self._tags) < _RESOLVED_CACHE:
                    self._tags[value] = tag
            return tag
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document: its plain data, and its span in the file to find a field's line."""

    file: str
    data: Any
    line: int  # 1-based line where the document's content starts
    text: str = field(repr=False, compare=False)  # the whole file (shared, not copied)
    start: int = 0  # offset of the first line of the document's content
    end: int = 0  # offset just past its content

    def line_of(self, loc: tuple[str | int, ...]) -> int:
        """Line of the deepest node along ``loc`` that exists (falls back to parents)."""
        try:
            node = _compose_span(self.text[self.start : self.end])
        except yaml.YAMLError:  # cannot happen for a span that parsed once; never hide the real error
            node = None
        if node is None:
            return self.line
        for key in loc:
            child: Node | None = None
            if isinstance(node, MappingNode):
                for k, v in node.value:
                    if k.value == key:
                        child = v
                        break
            elif isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
                child = node.value[key]
            if child is None:
                break
            node = child
        return self.line + node.start_mark.line


def _compose_span(text: str) -> Node | None:
    loader = _Loader(text)
    try:
        return loader.get_single_node()  # type: ignore[no-any-return]
    finally:
        loader.dispose()


class _Builder:
    """Node tree -> plain data in one walk: no aliases, bounded depth, no duplicate keys.

    Plain strings, decimal integers, floats, null and the default mapping and sequence
    tags are converted inline; anything else (YAML 1.1 bools, hex and sexagesimal numbers,
    timestamps, merge keys, !!set ...) goes to PyYAML's safe constructor, so the result is
    what ``yaml.safe_load`` would give. Unknown tags fail there as before.
    """

    def __init__(self, loader: Any, file: str, *, aliases_possible: bool = True) -> None:
        self.loader = loader
        self.file = file
        #: An alias is spelled ``*name``: a text without ``*`` has none, so the identity check is skipped.
        self.seen: set[int] | None = set() if aliases_possible else None

    def next_document(self) -> None:
        """Forget the last document: node identities and the safe constructor's per-document state."""
        if self.seen:
            self.seen.clear()
        if self.loader.constructed_objects:
            self.loader.constructed_objects, self.loader.recursive_objects = {}, {}

    def fail(self, node: Node, reason: str) -> SpecError:
        return SpecError(self.file, reason, line=node.start_mark.line + 1)

    def build(self, node: Node, depth: int = 0) -> Any:
        if self.seen is not None:
            if id(node) in self.seen:  # the composer hands out the same node again for an alias
                raise self.fail(node, "YAML aliases/anchors are not allowed in specs")
            self.seen.add(id(node))
        kind = type(node)
        tag = node.tag
        if kind is ScalarNode:
            value = node.value
            if tag == _STR:
                return value
            if tag == _INT and value.isdigit() and (value[0] != "0" or value == "0"):
                return int(value)
            if tag == _FLOAT and value[-1:].isdigit() and "_" not in value and ":" not in value:
                return float(value)
            if tag == _NULL:
                return None
            if tag == _BOOL and value.lower() in self.loader.bool_values:
                return self.loader.bool_values[value.lower()]
            return self.loader.construct_object(node, deep=True)
        if depth >= MAX_DEPTH:
            raise self.fail(node, f"invalid YAML: nesting deeper than {MAX_DEPTH} levels")
        if kind is MappingNode and tag == _MAP:
            out: dict[Any, Any] = {}
            inline = self.seen is None  # plain-string keys and values need no identity check: take them as they are
            for key_node, value_node in node.value:
                if inline and key_node.tag == _STR and type(key_node) is ScalarNode:
                    key = key_node.value
                elif key_node.tag == _MERGE:
                    return self.loader.construct_object(node, deep=True)
                else:
                    key = self.build(key_node, depth + 1)
                try:
                    duplicate = key in out
                except TypeError:
                    raise self.fail(key_node, "invalid YAML: a mapping key must be a plain value") from None
                if duplicate:
                    raise self.fail(key_node, f"invalid YAML: duplicate key {key!r}")
                if inline and value_node.tag == _STR and type(value_node) is ScalarNode:
                    out[key] = value_node.value
                else:
                    out[key] = self.build(value_node, depth + 1)
            return out
        if kind is SequenceNode and tag == _SEQ:
            return [self.build(child, depth + 1) for child in node.value]
        return self.loader.construct_object(node, deep=True)


def read_text(path: str | Path, *, max_bytes: int = MAX_SPEC_BYTES) -> str:
    """Read a spec file as strict UTF-8 with a size cap."""
    name = str(path)
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise SpecError(name, "no such file") from None
    except OSError as exc:
        raise SpecError(name, f"cannot read: {exc.strerror}") from None
    if p.is_dir():
        raise SpecError(name, "is a directory, expected a YAML file")
    if size > max_bytes:
        raise SpecError(name, f"file too large ({size / 2**20:.1f} MiB > {max_bytes / 2**20:.0f} MiB limit)")
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(name, f"not valid UTF-8 (byte {exc.start})") from None


#: ``progress(stage, done, total)``: long loads report documents read and validated (the CLI's bar).
Progress = Callable[[str, int, int], None]


def documents_hint(text: str) -> int:
    """About how many documents a stream holds (for a progress bar's total), without parsing it."""
    return text.count("\n---") + (0 if text.startswith("---") else 1)


def parse_documents(text: str, file: str, progress: Progress | None = None) -> list[Document]:
    """Parse every non-empty document of a YAML stream in one pass."""
    total = documents_hint(text) if progress is not None else 0
    docs: list[Document] = []
    aliases_possible = "*" in text
    loader = _Loader(text)
    builder = _Builder(loader, file, aliases_possible=aliases_possible)
    try:
        with no_gc():
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                if len(docs) >= MAX_DOCUMENTS:
                    raise SpecError(file, f"more than {MAX_DOCUMENTS:,} documents in one file")
                data = builder.build(node)
                builder.next_document()
                start = text.rfind("\n", 0, node.start_mark.index) + 1
                docs.append(Document(file, data, node.start_mark.line + 1, text, start, node.end_mark.index))
                if progress is not None:
                    progress("reading", len(docs), max(total, len(docs)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise SpecError(file, f"invalid YAML: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(file, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError(file, "invalid YAML: nesting too deep") from None
    finally:
        loader.dispose()
    return docs


def load_documents(path: str | Path, progress: Progress | None = None) -> list[Document]:
    return parse_documents(read_text(path), str(path), progress)
