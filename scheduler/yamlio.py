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

Most large files are plain block-style YAML (``key: value`` lines, ``- item`` lists, comments,
``---`` between documents), the shape every generator writes. Such a file is read by a
line scanner (``_simple_documents``) that builds the same data, lines and spans without
libyaml's per-scalar node objects and Python callbacks; it declines, and the whole file goes
to libyaml as before, at the first line outside that subset (flow collections, block or
escaped scalars, anchors, tags, tabs, non-ASCII, duplicate keys, anything invalid), so every
error is still libyaml's or the builder's, with its line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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


_UNCOMMON = object()  # what ``_common_scalar`` gives for a value it leaves to PyYAML's constructors


def _common_scalar(tag: str, value: str, bool_values: dict[str, bool]) -> Any:
    """A resolved plain scalar's value where it is certain to equal PyYAML's construction (decimal
    ints without a leading zero, plain decimal floats, null, booleans), else ``_UNCOMMON``."""
    if tag == _INT and value.isdigit() and (value[0] != "0" or value == "0"):
        return int(value)
    if tag == _FLOAT and value[-1:].isdigit() and "_" not in value and ":" not in value:
        return float(value)
    if tag == _NULL:
        return None
    if tag == _BOOL and value.lower() in bool_values:
        return bool_values[value.lower()]
    return _UNCOMMON


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
            got = _common_scalar(tag, value, self.loader.bool_values)
            return got if got is not _UNCOMMON else self.loader.construct_object(node, deep=True)
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


class _NotSimple(Exception):
    """The text leaves the subset ``_simple_documents`` reads: libyaml reads the whole file."""


#: Printable ASCII and newline: a text with any other character (tab, CR, BOM, controls,
#: non-ASCII) is libyaml's.
_SIMPLE_BYTES = bytes(range(0x20, 0x7F)) + b"\n"
_WORD = r"[A-Za-z0-9_./~+=()@%,-]"
_PLAIN = r"([A-Za-z0-9_./~]" + _WORD + r"*(?: +" + _WORD + r"+)*)"
_SINGLE = r"'([^'\n]*)'"
_DOUBLE = r'"([^"\\\n]*)"'
_TAIL = r"(?: +(?:#.*)?)?"  # after a value: spaces, and a comment only after a space
#: One line of the subset: indent, then ``- `` or ``key:``, an optional single-line scalar
#: (plain words that cannot be an indicator, a comment or a ``key:``; or quoted without
#: escapes), trailing spaces and a comment; or a blank or comment-only line.
_LINE = re.compile(
    r"( *)(?:(?:(-)|([A-Za-z0-9_][A-Za-z0-9_./-]{0,199}):)(?: +(?:(?:"
    + "|".join((_PLAIN, _SINGLE, _DOUBLE))
    + ")"
    + _TAIL
    + r"|#.*)?)?|#.*)?"
)
#: A layout's pattern for a value: the ``_LINE`` sub-pattern of its kind, a plain one without
#: inner spaces when the document's had none. It is never wider than ``_LINE`` (see ``_read_lines``).
_LAYOUT_VALUES = {
    1: r"([A-Za-z0-9_./~]" + _WORD + r"*)",
    -1: _PLAIN,  # a plain value with inner spaces
    2: _SINGLE,
    3: _DOUBLE,
}
#: Layouts remembered per line count, and in all: a file of a few shapes (a generator's)
#: reuses them; a file of all different ones is read line by line, as without them.
_LAYOUTS_PER_COUNT = 4
_LAYOUTS = 64
#: Nesting the scanner takes on (specs need 3 levels); deeper files go to libyaml and its limits.
_SIMPLE_DEPTH = 16
_NONE: Any = object()  # a ``key:`` or ``-`` with nothing after it on its line


class _SimpleScalars:
    """A plain scalar's value exactly as the one-pass builder gives it, per distinct text.

    The tag comes from the loader's own resolver (``_Loader.resolve``); the conversions are
    the builder's inline ones; a scalar the builder would hand to PyYAML's constructor
    (timestamps, hex, ``1_000``, ``.inf`` ...) declines the fast path.
    """

    def __init__(self) -> None:
        self.loader = _Loader("")
        self.values: dict[str, Any] = {}
        self.keys: dict[str, bool] = {}
        #: First characters some implicit resolver claims; a plain scalar starting otherwise is a str
        #: (unless a resolver applies to every value, or by path: then every scalar is resolved).
        self.claimed: dict[Any, Any] = self.loader.yaml_implicit_resolvers
        self.resolve_all = None in self.claimed or bool(self.loader.yaml_path_resolvers)

    def str_first(self, c: str) -> bool:
        return c not in self.claimed and not self.resolve_all

    def dispose(self) -> None:
        self.loader.dispose()

    def value(self, text: str) -> Any:
        return text if self.str_first(text[0]) else self.resolved(text)

    def resolved(self, text: str) -> Any:
        """The value of a plain scalar by the resolver's tag (cached per text)."""
        got = self.values.get(text, _NONE)
        if got is _NONE:
            got = self._convert(text)
            if len(self.values) < _RESOLVED_CACHE:
                self.values[text] = got
        return got

    def key(self, text: str) -> str:
        """A plain key the builder takes as it is (a str); any other key declines the fast path."""
        ok = self.keys.get(text)
        if ok is None:
            ok = self.keys[text] = self.str_first(text[0]) or self.loader.resolve(ScalarNode, text, (True, False)) == _STR
        if not ok:
            raise _NotSimple
        return text

    def _convert(self, value: str) -> Any:
        tag = self.loader.resolve(ScalarNode, value, (True, False))
        if tag == _STR:
            return value
        got = _common_scalar(tag, value, self.loader.bool_values)
        if got is _UNCOMMON:
            raise _NotSimple
        return got


Plan = tuple[tuple[str, Any], ...]
"""How a document's data is built from its values: a mapping's (key, node) pairs, a node being
the index of a value, a nested plan, a list of value indices, or None (``key:`` alone)."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """A document's layout (each line's indent, key or ``-``, and value kind): a pattern that
    matches exactly the documents laid out the same way, capturing their values in order
    after an empty group at the first entry; the plan for their data; which values are plain
    (resolved) rather than quoted; and how many lines precede the first entry."""

    pattern: str
    plan: Plan
    plain: tuple[int, ...]
    lead: int

    def builder(self, scalars: _SimpleScalars) -> Callable[[Sequence[Any]], dict[str, Any]]:
        """The plan as one function of the captured values: a nested dict display in which
        each plain value is resolved unless its first character is one no resolver claims,
        what ``_build`` does after the resolving loop, in one expression.

        Its source holds only ``repr`` of keys (``_LINE`` allows letters, digits and ``_./-``
        in them) and value indices; a file of a few layouts compiles a few small functions.
        """
        plain = set(self.plain)

        def scalar(i: int) -> str:
            if i not in plain:
                return f"v[{i}]"
            if scalars.resolve_all:
                return f"resolved(v[{i}])"
            return f"(x if (x := v[{i}])[0] not in claimed else resolved(x))"

        def node(n: Any) -> str:
            if type(n) is int:
                return scalar(n)
            if type(n) is tuple:
                return "{" + ", ".join(f"{key!r}: {node(child)}" for key, child in n) + "}"
            if type(n) is list:
                return "[" + ", ".join(scalar(i) for i in n) + "]"
            return "None"

        namespace: dict[str, Any] = {"claimed": scalars.claimed, "resolved": scalars.resolved}
        exec(compile(f"def build(v):\n    return {node(self.plan)}\n", "<yaml layout>", "exec"), namespace)
        return namespace["build"]  # type: ignore[no-any-return]


def _simple_documents(text: str, file: str, progress: Progress | None = None) -> list[Document] | None:
    """The documents of a plain block-style stream, as ``parse_documents`` gives them, or None
    when the text leaves that subset (see the module's docstring).

    The stream is split at its ``---`` lines. A document is read line by line, one regular
    expression each (``_read_lines``), and its entries (indent, key or ``-``, value) become
    mappings and lists by the rules libyaml applies to them (``_plan``). Its layout is then
    remembered as one pattern: the next document laid out the same way (a generator writes
    few layouts) is matched whole and built from its captured values by the plan compiled
    into one function (``_Layout.builder``). A
    document's ``line`` and ``start`` are its first entry's, its ``end`` the start of the
    ``---`` that closes it or the end of the text: the marks libyaml gives a block mapping.
    """
    if not text.isascii() or text.encode("ascii").translate(None, _SIMPLE_BYTES):
        return None
    total = documents_hint(text) if progress is not None else 0
    scalars = _SimpleScalars()
    known: dict[int, list[tuple[re.Pattern[str], Callable[[Sequence[Any]], dict[str, Any]], _Layout]]] = {}
    remembered = 0
    docs: list[Document] = []
    seps = _separators(text)
    pos, line, opened = 0, 1, False  # the chunk being read: its offset and first line, after a "---"?
    try:
        for end in [*seps, len(text)]:
            count = text.count("\n", pos, end)
            for pattern, build, candidate in known.get(count, ()):
                m = pattern.fullmatch(text, pos, end)
                if m is not None:
                    layout, data, start = candidate, build(m.groups()), m.start(1)
                    break
            else:
                chunk = text[pos:end]
                whole = chunk.endswith("\n")  # ends at a line's end: its layout can be reused
                read = _read_lines(chunk[:-1] if whole else chunk, scalars)
                if read is None:  # only blank lines and comments
                    if opened:
                        raise _NotSimple  # an empty document: libyaml's null
                    pos, line, opened = end + 4, line + count + 1, True
                    continue
                layout, values = read
                start = pos + sum(len(x) + 1 for x in chunk.split("\n", layout.lead)[: layout.lead])
                for i in layout.plain:
                    values[i] = scalars.value(values[i])
                data = _build(layout.plan, values)
                if whole and remembered < _LAYOUTS and len(known.setdefault(count, [])) < _LAYOUTS_PER_COUNT:
                    known[count].append((re.compile(layout.pattern), layout.builder(scalars), layout))
                    remembered += 1
            if len(docs) >= MAX_DOCUMENTS:
                raise _NotSimple  # libyaml's path words the error
            docs.append(Document(file, data, line + layout.lead, text, start, end))
            if progress is not None:
                progress("reading", len(docs), max(total, len(docs)))
            pos, line, opened = end + 4, line + count + 1, True
    except _NotSimple:
        return None
    finally:
        scalars.dispose()
    return docs


def _separators(text: str) -> list[int]:
    """Offsets of the lines that are exactly ``---``."""
    seps = [0] if text.startswith("---\n") or text == "---" else []
    at = text.find("\n---\n")
    while at != -1:
        seps.append(at + 1)
        at = text.find("\n---\n", at + 4)
    if text.endswith("\n---"):
        seps.append(len(text) - 3)
    return seps


def _read_lines(chunk: str, scalars: _SimpleScalars) -> tuple[_Layout, list[Any]] | None:
    """A document's layout and raw values, read line by line (None: it has no entry).

    The layout's pattern takes each line as it is, but for its values: a blank or comment
    line exactly; an entry's indent, key or ``-``, and the space after it exactly when it
    was one space; the value by its kind (see ``_LAYOUT_VALUES``); trailing spaces and a
    comment only if the line had them. Every line it matches is one ``_LINE`` reads the same
    way (the same entry, and the value the same group captures), and a narrow pattern is
    quick; a document laid out differently is read line by line, and its layout remembered.
    """
    match = _LINE.fullmatch
    entries: list[tuple[int, str | None, int]] = []  # (indent, key or None for "-", value index or 0)
    values: list[Any] = [""]  # index 0: the empty group at the first entry
    parts: list[str] = []
    plain: list[int] = []
    lead = 0
    for text in chunk.split("\n"):
        m = match(text)
        if m is None:
            raise _NotSimple
        indent, dash, key, plain_value, single, double = m.groups()
        if dash is None and key is None:
            parts.append(re.escape(text) + "\n")
            lead += not entries
            continue
        if not entries:
            parts.append("()")
        kind, group = (
            (1, 4) if plain_value is not None else (2, 5) if single is not None else (3, 6) if double is not None else (0, 0)
        )
        head = indent + ("-" if dash is not None else f"{key}:")
        if kind:
            values.append(m.group(group))
            if kind == 1:
                plain.append(len(values) - 1)
            gap = text[len(head) : m.start(group) - (kind != 1)]
            tail = text[m.end(group) + (kind != 1) :]
            value = _LAYOUT_VALUES[-1 if kind == 1 and " " in values[-1] else kind]
            parts.append(re.escape(head) + (" " if gap == " " else " +") + value + (_TAIL if tail else "") + "\n")
        else:
            parts.append(re.escape(head) + (_TAIL if text[len(head) :] else "") + "\n")
        if key is not None:
            scalars.key(key)
        entries.append((len(indent), key, len(values) - 1 if kind else 0))
    if not entries:
        return None
    return _Layout("".join(parts), _plan(entries), tuple(plain), lead), values


def _plan(entries: list[tuple[int, str | None, int]]) -> Plan:
    """The plan of a document's entries, by libyaml's rules for them (see ``_simple_documents``):
    entries of a mapping align; a ``key:`` with nothing after it holds the deeper block that
    follows (a list may also start at the key's own indent), or null; a scalar is never
    continued on a deeper line. Anything else declines: libyaml's path reads or words it."""
    n = len(entries)

    def block(i: int, depth: int) -> tuple[Any, int]:
        """The mapping or list whose first entry is ``entries[i]``, and the index after it."""
        if depth >= _SIMPLE_DEPTH:
            raise _NotSimple
        indent, key, _ = entries[i]
        if key is None:  # a list: "- scalar" entries at its indent
            items = []
            while i < n:
                at, key, index = entries[i]
                if at != indent or key is not None or not index:
                    break
                items.append(index)
                i += 1
            if i < n and (entries[i][0] > indent or (entries[i][0] == indent and entries[i][1] is None)):
                raise _NotSimple  # a continued scalar, or "-" with a nested block
            return items, i
        pairs: list[tuple[str, Any]] = []
        keys: set[str] = set()
        while i < n:
            at, key, index = entries[i]
            if at != indent:
                if at > indent:
                    raise _NotSimple  # a continued scalar, or an indent between two levels
                break
            if key is None or key in keys:
                raise _NotSimple  # "- " where a key belongs; a duplicate key (libyaml's path words it)
            keys.add(key)
            i += 1
            node: Any = index or None
            if not index and i < n and (entries[i][0] > indent or (entries[i][0] == indent and entries[i][1] is None)):
                node, i = block(i, depth + 1)
            pairs.append((key, node))
        return tuple(pairs), i

    if entries[0][1] is None:
        raise _NotSimple  # a list as the document: libyaml's path
    plan, i = block(0, 0)
    if i != n:
        raise _NotSimple  # an entry left of the document's indent
    return plan  # type: ignore[no-any-return]


def _build(plan: Plan, values: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, node in plan:
        kind = type(node)
        out[key] = (
            values[node]
            if kind is int
            else _build(node, values)
            if kind is tuple
            else [values[i] for i in node]
            if kind is list
            else None
        )
    return out


def parse_documents(text: str, file: str, progress: Progress | None = None) -> list[Document]:
    """Parse every non-empty document of a YAML stream in one pass (the line scanner's, else libyaml's)."""
    with no_gc():
        simple = _simple_documents(text, file, progress)
    return simple if simple is not None else _libyaml_documents(text, file, progress)


def _libyaml_documents(text: str, file: str, progress: Progress | None = None) -> list[Document]:
    """Every non-empty document of any YAML stream, composed by libyaml and built by ``_Builder``."""
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
