"""YAML spec streams through PyYAML's libyaml loader, with the defences user input needs.

Specs are user input, so loading is defensive: strict UTF-8 and a size cap (``documents``),
no aliases or anchors (which defeats "billion laughs" bombs), no duplicate keys, libyaml's own
nesting limit (1000 levels), a document count limit, and every error as one line with its
line number.

Each document is composed by libyaml (``yaml.CSafeLoader``) and constructed by PyYAML's safe
constructor, so the data is exactly what ``yaml.safe_load_all`` gives. The constructor's
generic machinery (per-node bookkeeping for recursive structures, generators) costs more
than libyaml's parsing on a 100k-job file, so ``SpecLoader.build`` walks mappings, lists and
plain strings itself and hands every other node (numbers, booleans, timestamps, merge keys,
``!!set`` ...) to PyYAML's constructor. Only the document's first line and its span of the
text are kept: the line of a field inside it is found when an error names that field, by
composing the span again (``line_in_span``). Without libyaml the pure-Python ``SafeLoader``
does the same, slower, and says so once on stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from yaml import MappingNode, Node, ScalarNode, SequenceNode
from yaml.constructor import ConstructorError

from scheduler.errors import SpecError
from scheduler.io import documents as limits
from scheduler.io.documents import Document, Progress

_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)  # absent when PyYAML was built without libyaml
LIBYAML_MISSING = (
    "mcsched: PyYAML was built without libyaml, so YAML specs load with its pure-Python loader "
    "(several times slower); install libyaml and reinstall PyYAML, or use JSON Lines for large files"
)
_noticed = False
#: Distinct plain scalars whose tag is remembered (specs repeat the same keys and values).
_TAG_CACHE = 65_536
#: Deeper than any spec needs (a Job is 3 levels); libyaml itself stops at 1000.
MAX_DEPTH = 64
_STR, _MAP, _SEQ, _MERGE = (f"tag:yaml.org,2002:{t}" for t in ("str", "map", "seq", "merge"))
_INT, _FLOAT, _NULL, _BOOL = (f"tag:yaml.org,2002:{t}" for t in ("int", "float", "null", "bool"))
_UNSEEN = object()


class SpecRuleError(ConstructorError):
    """A rule of ours (not of YAML) broken at a node: its message carries no "invalid YAML" prefix."""


class _SpecRules:
    """What a spec loader adds to PyYAML's safe loader: ``build`` (see the module), and the
    scalar tag lookup cached. The composer asks ``resolve`` for the tag of every plain scalar (a
    few regular expressions each); a 100k-job file asks about the same few hundred texts.
    """

    bool_values: dict[str, bool]
    constructed_objects: dict[Node, Any]
    recursive_objects: dict[Node, None]

    def __init__(self, stream: str) -> None:
        self._tags: dict[str, str] = {}
        self._scalars: dict[tuple[str, str], Any] = {}
        #: An alias is spelled ``*name``: in a text without ``*`` there is none to look for.
        self._seen: set[int] | None = set() if "*" in stream else None
        #: A merge key is ``<<`` (or tagged ``!!merge``): without either, no mapping needs PyYAML's merging.
        self._merges = "<<" in stream or "merge" in stream

    def build(self, node: Node, depth: int = 0) -> Any:
        """One document's data from its node tree: ``construct_document``'s result, without its
        bookkeeping for the common nodes; refuses aliases, duplicate keys and deep nesting."""
        if self._seen is not None:
            if id(node) in self._seen:
                raise SpecRuleError(None, None, "YAML aliases/anchors are not allowed in specs", node.start_mark)
            self._seen.add(id(node))
        kind, tag = type(node), node.tag
        if kind is ScalarNode:
            return node.value if tag == _STR else self.scalar(node)
        if depth >= MAX_DEPTH:
            raise SpecRuleError(None, None, f"invalid YAML: nesting deeper than {MAX_DEPTH} levels", node.start_mark)
        if kind is SequenceNode and tag == _SEQ:
            return [self.build(child, depth + 1) for child in node.value]
        if kind is not MappingNode or tag != _MAP or (self._merges and any(k.tag == _MERGE for k, _ in node.value)):
            return self._hand_over(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if key_node.tag == _STR and type(key_node) is ScalarNode else self.build(key_node, depth + 1)
            try:
                duplicate = key in out
            except TypeError:
                raise SpecRuleError(None, None, "invalid YAML: a mapping key must be a plain value", key_node.start_mark) from None
            if duplicate:
                raise SpecRuleError(None, None, f"invalid YAML: duplicate key {key!r}", key_node.start_mark)
            out[key] = self.build(value_node, depth + 1)
        return out

    def _hand_over(self, node: Node) -> Any:
        """PyYAML's construction of a node ``build`` does not take (a merge, a set, a tagged
        collection), after checking its subtree for aliases as ``build`` would."""
        if self._seen is not None:
            stack = _children(node)
            while stack:
                child = stack.pop()
                if id(child) in self._seen:
                    raise SpecRuleError(None, None, "YAML aliases/anchors are not allowed in specs", child.start_mark)
                self._seen.add(id(child))
                stack += _children(child)
        return self.construct_object(node, deep=True)

    def scalar(self, node: Node) -> Any:
        """A non-string scalar's value: decimal ints, plain floats, null and booleans (certain to
        equal PyYAML's construction) directly and remembered per text; the rest by PyYAML."""
        key = (node.tag, node.value)
        got = self._scalars.get(key, _UNSEEN)
        if got is _UNSEEN:
            tag, value = key
            if tag == _INT and value.isdigit() and (value[0] != "0" or value == "0"):
                got = int(value)
            elif tag == _FLOAT and value[-1:].isdigit() and "_" not in value and ":" not in value:
                got = float(value)
            elif tag == _NULL:
                got = None
            elif tag == _BOOL and value.lower() in self.bool_values:
                got = self.bool_values[value.lower()]
            else:
                return self.construct_object(node, deep=True)
            if len(self._scalars) < _TAG_CACHE:
                self._scalars[key] = got
        return got

    def next_document(self) -> None:
        """Forget the last document's nodes (for the alias check and PyYAML's constructor)."""
        if self._seen:
            self._seen.clear()
        if self.constructed_objects:
            self.constructed_objects, self.recursive_objects = {}, {}

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is ScalarNode and implicit[0]:
            tag = self._tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)  # type: ignore[misc]
                if len(self._tags) < _TAG_CACHE:
                    self._tags[value] = tag
            return tag
        return super().resolve(kind, value, implicit)  # type: ignore[misc, no-any-return]

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        """Nothing to track: no path resolvers are registered (the composer calls this per node)."""

    def ascend_resolver(self) -> None:
        """Nothing to track (see ``descend_resolver``)."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # Nodes ``build`` hands over (merges, sets, ...): the composer gives the anchored node
        # again for each alias, so a second visit within a document is one.
        if node in self.constructed_objects:
            raise SpecRuleError(None, None, "YAML aliases/anchors are not allowed in specs", node.start_mark)
        return super().construct_object(node, deep)  # type: ignore[misc]

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        pairs = list(node.value)  # before merge keys are flattened into it
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)  # type: ignore[misc]
        if len(mapping) != len(pairs):  # fewer keys than entries: a duplicate (or merged entries)
            _refuse_duplicate(pairs)
        return mapping


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _refuse_duplicate(pairs: list[tuple[Node, Node]]) -> None:
    seen: set[tuple[str, str]] = set()
    for key, _ in pairs:
        if key.tag == _MERGE or not isinstance(key, ScalarNode):
            continue
        ident = (key.tag, key.value)
        if ident in seen:
            raise SpecRuleError(None, None, f"invalid YAML: duplicate key {key.value!r}", key.start_mark)
        seen.add(ident)


class PureSpecLoader(_SpecRules, yaml.SafeLoader):
    """The spec loader on PyYAML's pure-Python parser (where libyaml is missing)."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        _SpecRules.__init__(self, stream)


if _CSafeLoader is not None:

    class SpecLoader(_SpecRules, _CSafeLoader):  # type: ignore[misc]
        """The spec loader on libyaml's parser and composer."""

        def __init__(self, stream: str) -> None:
            _CSafeLoader.__init__(self, stream)
            _SpecRules.__init__(self, stream)

    LOADER: type[Any] = SpecLoader
else:  # pragma: no cover - PyYAML without libyaml
    LOADER = PureSpecLoader


def _loader(text: str) -> Any:
    """A loader for ``text``: libyaml's, else the pure one with a one-time notice on stderr."""
    global _noticed
    if LOADER is PureSpecLoader and not _noticed:
        _noticed = True
        print(LIBYAML_MISSING, file=sys.stderr)
    return LOADER(text)


def documents_hint(text: str) -> int:
    """About how many documents a stream holds (for a progress bar's total), without parsing it."""
    return text.count("\n---") + (0 if text.startswith("---") else 1)


def parse_documents(text: str, file: str, progress: Progress | None = None) -> list[Document]:
    """Every document of a YAML stream (an empty one is ``None`` data), or the first error as a ``SpecError``."""
    total = documents_hint(text) if progress is not None else 0
    docs: list[Document] = []
    loader = None
    try:
        loader = _loader(text)  # the pure loader checks the characters here
        while loader.check_node():
            node = loader.get_node()
            if len(docs) >= limits.MAX_DOCUMENTS:
                raise SpecError(file, f"more than {limits.MAX_DOCUMENTS:,} documents in one file")
            data = loader.build(node)
            loader.next_document()
            mark = node.start_mark
            start = text.rfind("\n", 0, mark.index) + 1
            docs.append(Document(file, data, mark.line + 1, text, start, node.end_mark.index))
            if progress is not None:
                progress("reading", len(docs), max(total, len(docs)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join((exc.problem or exc.context or "invalid YAML").split())
        reason = problem if isinstance(exc, SpecRuleError) else f"invalid YAML: {problem}"
        raise SpecError(file, reason, line=mark.line + 1 if mark is not None else None) from None
    except yaml.reader.ReaderError as exc:  # libyaml counts its position in UTF-8 bytes, PyYAML in characters
        before = text.count("\n", 0, exc.position) if LOADER is PureSpecLoader else text.encode()[: exc.position].count(b"\n")
        raise SpecError(file, f"invalid YAML: {exc.reason} (character #x{exc.character:x})", line=before + 1) from None
    except yaml.YAMLError as exc:
        raise SpecError(file, "invalid YAML: " + " ".join(str(exc).split())) from None
    except RecursionError:  # the pure-Python composer recurses per level
        raise SpecError(file, "invalid YAML: nesting too deep") from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def line_in_span(span: str, loc: tuple[str | int, ...]) -> int:
    """0-based line, within ``span`` (one document's text), of the deepest node along ``loc``."""
    loader = _loader(span)
    try:
        node: Node | None = loader.get_single_node()
    except yaml.YAMLError:  # cannot happen for a span that loaded once; never hide the real error
        return 0
    finally:
        loader.dispose()
    if node is None:
        return 0
    for key in loc:
        child: Node | None = None
        if isinstance(node, MappingNode):
            child = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key), None)
        elif isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            child = node.value[key]
        if child is None:
            break
        node = child
    return int(node.start_mark.line)
