"""Safe YAML loading that remembers where every value came from.

Specs are user input, so loading is defensive: a size cap, strict UTF-8, no aliases (which
defeats "billion laughs" bombs) and line numbers kept for every node so validation errors
can say ``file:line: field: why``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scheduler.errors import SpecError

MAX_SPEC_BYTES = 4 * 1024 * 1024
MAX_DOCUMENTS = 10_000


@dataclass(frozen=True)
class Document:
    """One YAML document: the plain data plus a way to find a field's line."""

    file: str
    data: Any
    node: yaml.Node

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def line_of(self, loc: tuple[str | int, ...]) -> int:
        """Line of the deepest node along ``loc`` that exists (falls back to parents)."""
        node: yaml.Node = self.node
        for key in loc:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == key:
                        child = v
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
                child = node.value[key]
            if child is None:
                break
            node = child
        return node.start_mark.line + 1


def _reject_aliases(node: yaml.Node, file: str, seen: set[int]) -> None:
    stack = [node]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            raise SpecError(file, "YAML aliases/anchors are not allowed in specs", line=cur.start_mark.line + 1)
        seen.add(id(cur))
        if isinstance(cur, yaml.MappingNode):
            for k, v in cur.value:
                stack.append(k)
                stack.append(v)
        elif isinstance(cur, yaml.SequenceNode):
            stack.extend(cur.value)


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
        raise SpecError(name, f"file too large ({size / 1e6:.1f} MB > {max_bytes / 1e6:.0f} MB limit)")
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(name, f"not valid UTF-8 (byte {exc.start})") from None


def parse_documents(text: str, file: str) -> list[Document]:
    """Parse every non-empty document of a YAML stream, keeping nodes for line lookup."""
    docs: list[Document] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None:
                continue
            _reject_aliases(node, file, set())
            if len(docs) >= MAX_DOCUMENTS:
                raise SpecError(file, f"more than {MAX_DOCUMENTS} documents in one file")
            data = yaml.SafeLoader(text).construct_document(node)
            docs.append(Document(file=file, data=data, node=node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise SpecError(file, f"invalid YAML: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(file, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError(file, "invalid YAML: nesting too deep") from None
    return docs


def load_documents(path: str | Path) -> list[Document]:
    return parse_documents(read_text(path), str(path))
