"""The one-pass libyaml loader: the same data as ``yaml.safe_load``, field lines for every
document of a long stream, and the defences (aliases, depth, duplicate keys, document count)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import yamlio
from scheduler.errors import SpecError
from scheduler.yamlio import MAX_DEPTH, parse_documents

SCALARS = """\
plain: hello
quoted: "012"
single: 'yes'
int: 42
zero: 0
negative: -7
octal: 012
hex: 0x1F
underscored: 1_000
sexagesimal: 1:30
float: 2.5
exp: 1.0e+3
inf: .inf
nan_is_str: nan
yes_bool: yes
off_bool: Off
true_bool: true
null_tilde: ~
null_word: null
empty:
date: 2024-05-01
stamp: 2024-05-01T10:00:00Z
list: [1, two, 3.0, null]
nested: {a: {b: [x, {c: d}]}}
block: |
  line one
  line two
binary: !!binary aGVsbG8=
set: !!set {a, b}
merged: {<<: {x: 1}, y: 2}
"""


def test_values_are_what_safe_load_gives() -> None:
    (doc,) = parse_documents(SCALARS, "s.yaml")
    expected = yaml.safe_load(SCALARS)
    assert doc.data == expected
    assert {k: type(v) for k, v in doc.data.items()} == {k: type(v) for k, v in expected.items()}


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_like, min_size=1, max_size=4))
def test_any_safe_dumped_stream_loads_back_unchanged(values: list[object]) -> None:
    text = yaml.safe_dump_all(values, default_flow_style=False)
    assert [d.data for d in parse_documents(text, "h.yaml")] == list(yaml.safe_load_all(text))


STREAM = """\
# a comment before the first document
apiVersion: mcsched.io/v1
kind: Job
metadata:
  name: a
---
apiVersion: mcsched.io/v1
kind: Job
metadata: {name: b}
spec: {class: training, gpus: 8}
---

# blank lines and a comment inside the third document
apiVersion: mcsched.io/v1
kind: Job
spec:
  regions:
    - eastus
    - westus
--- {kind: Job, spec: {gpus: 1}}
"""


def test_each_document_knows_the_lines_of_its_fields() -> None:
    docs = parse_documents(STREAM, "s.yaml")
    assert [d.line for d in docs] == [2, 7, 14, 20]
    assert docs[0].line_of(("metadata", "name")) == 5
    assert docs[1].line_of(("spec", "gpus")) == 10
    assert docs[2].line_of(("spec", "regions", 1)) == 19
    assert docs[2].line_of(("spec", "nope", "deeper")) == 17  # the deepest node that exists
    assert docs[3].line_of(("spec", "gpus")) == 20


def test_aliases_are_refused_with_their_line() -> None:
    with pytest.raises(SpecError) as bad:
        parse_documents("a: &x [1, 2]\nb: *x\n", "a.yaml")
    assert bad.value.one_line() == "a.yaml:1: YAML aliases/anchors are not allowed in specs"  # the anchor
    bomb = "a: &a [x, x]\n" + "".join(f"{c}: &{c} [*{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    with pytest.raises(SpecError, match="aliases"):
        parse_documents(bomb, "bomb.yaml")


def test_duplicate_keys_and_unhashable_keys_are_refused() -> None:
    with pytest.raises(SpecError) as dup:
        parse_documents("spec:\n  gpus: 8\n  gpus: 16\n", "d.yaml")
    assert dup.value.one_line() == "d.yaml:3: invalid YAML: duplicate key 'gpus'"
    with pytest.raises(SpecError, match="plain value"):
        parse_documents("? [a, b]\n: 1\n", "k.yaml")


def test_nesting_is_bounded() -> None:
    deep = "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    with pytest.raises(SpecError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        parse_documents(deep, "deep.yaml")
    ok = "a: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n"
    assert parse_documents(ok, "ok.yaml")[0].line == 1


def test_document_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlio, "MAX_DOCUMENTS", 3)
    with pytest.raises(SpecError, match="more than 3 documents"):
        parse_documents("---\n".join(f"n: {i}\n" for i in range(4)), "many.yaml")


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(SpecError) as bad:
        parse_documents("a: 1\nb: [unclosed\nc: 3\n", "x.yaml")
    assert bad.value.line == 3 and "invalid YAML" in bad.value.reason


# --------------------------------------------------------------------------- the line scanner
# Plain block-style files are read by ``_simple_documents`` instead of libyaml. It must give
# exactly what the libyaml path gives (data with its types, lines, spans, progress), or
# decline; it must decline every text libyaml's path refuses, so errors keep their wording.


def _typed(x: object) -> object:
    """``x`` with every value tagged by its type (``True == 1`` and ``1 == 1.0`` must not pass)."""
    if isinstance(x, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in x.items()])
    if isinstance(x, list):
        return ("list", [_typed(v) for v in x])
    return (type(x).__name__, x)


def _both(text: str) -> tuple[list[yamlio.Document] | None, list[yamlio.Document] | str]:
    """(the scanner's documents or None, libyaml's documents or its error line)."""
    try:
        slow: list[yamlio.Document] | str = yamlio._libyaml_documents(text, "t.yaml")
    except SpecError as exc:
        slow = exc.one_line()
    return yamlio._simple_documents(text, "t.yaml"), slow


def _assert_same_or_declined(text: str) -> bool:
    fast, slow = _both(text)
    if fast is None:
        return False
    assert not isinstance(slow, str), f"the scanner read a text libyaml refuses ({slow}):\n{text}"
    assert fast == slow, text  # file, line, start, end of every document
    assert [_typed(d.data) for d in fast] == [_typed(d.data) for d in slow], text
    return True


def _bench_like(n: int) -> str:
    """``n`` documents as the CLI benchmark writes them (scheduler's own generator, same seed)."""
    import random

    from benchmarks.cli import job_yaml

    rng = random.Random(7)
    return "---\n".join(job_yaml(i, rng) for i in range(n))


FAST_TEXTS = {
    "bench": _bench_like(50),
    "stream": "# lead\n\n---\na: 1\nb:\n  c: x y  # note\n  d:\n  - p\n  - q\n  e: ~\n\n# tail\n---\nz: 'it # is'\nw: \"q: r\"\n",
    "no final newline": "a: 1\nb: 2",
    "root indented": "  a: 1\n  b:\n    c: 2\n",
    "deeper list": "a:\n    - 1\n    - 2.5\nb: null\n",
    "comments everywhere": "#\na: 1 # one\n  # odd indent comment\nb:    # opens\n  c: yes\n#x\n",
    "scalars": "s: hello world\nn: 0\ni: 42\nf: 2.5\ne: 1.0e+3\nd: .5\nt: true\nnf: false\nu: ~\nx: x@y\np: 50%\nk: a,b\nq: f(x)\nr: b=c\nm: x -m\nl: ...\n",
}

DECLINED_TEXTS = {
    "flow": "a: [1, 2]\n",
    "block scalar": "a: |\n  x\n",
    "continued plain": "a: b\n  c\n",
    "tab": "a:\t1\n",
    "crlf": "a: 1\r\nb: 2\r\n",
    "non-ascii": "a: caf\u00e9\n",
    "empty document": "a: 1\n---\n---\nb: 2\n",
    "trailing separator": "a: 1\n---\n",
    "duplicate": "a: 1\na: 2\n",
    "hex": "a: 0x1F\n",
    "date": "a: 2024-05-01\n",
    "octal-like": "a: 012\n",
    "bool key": "on: 1\n",
    "int key": "1: a\n",
    "anchor": "a: &x 1\nb: *x\n",
    "bad indent": "a:\n    b: 1\n  c: 2\n",
    "list at root": "- a\n- b\n",
    "scalar then list": "a: 1\n- b\n",
    "list of maps": "a:\n- b: 1\n",
    "escaped": 'a: "x\\ty"\n',
    "directive": "%YAML 1.1\n---\na: 1\n",
    "end marker": "a: 1\n...\n",
    "separator with content": "--- a: 1\n",
}


@pytest.mark.parametrize("name", sorted(FAST_TEXTS))
def test_the_scanner_reads_plain_block_files_as_libyaml_does(name: str) -> None:
    assert _assert_same_or_declined(FAST_TEXTS[name]), f"{name} should take the fast path"


@pytest.mark.parametrize("name", sorted(DECLINED_TEXTS))
def test_the_scanner_declines_what_it_does_not_read(name: str) -> None:
    assert yamlio._simple_documents(DECLINED_TEXTS[name], "t.yaml") is None
    parse_documents_or_error = _both(DECLINED_TEXTS[name])[1]
    assert parse_documents_or_error is not None


def test_shipped_examples_load_the_same_on_either_path() -> None:
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parents[1].joinpath("deploy", "examples").rglob("*.yaml"))
    assert files
    fast = [f.name for f in files if _assert_same_or_declined(f.read_text())]
    assert "job.yaml" in fast


def test_both_paths_report_the_same_progress() -> None:
    text = FAST_TEXTS["bench"]
    calls: dict[str, list[tuple[str, int, int]]] = {"fast": [], "slow": []}
    assert yamlio._simple_documents(text, "p.yaml", lambda *a: calls["fast"].append(a)) is not None
    yamlio._libyaml_documents(text, "p.yaml", lambda *a: calls["slow"].append(a))
    assert calls["fast"] == calls["slow"] and len(calls["fast"]) == 50


_KEYS = ["a", "b", "c", "name", "spec", "x.y", "k-1", "_k", "on", "yes", "null", "1", "N"]
_VALUES = [
    "x",
    "0",
    "7",
    "012",
    "0x1F",
    "1_000",
    "1.5",
    ".5",
    "1e3",
    "1.0e+3",
    ".inf",
    "1.",
    "~",
    "null",
    "Null",
    "NULL",
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "n",
    "true",
    "True",
    "2024-05-01",
    "1:30",
    "a b",
    "a  b",
    "a#b",
    "a,b",
    "50%",
    "x@y",
    "=",
    "-1",
    "+1",
    "'q'",
    "'it''s'",
    "'#'",
    '"d#q"',
    '"e\\n"',
    '""',
    "''",
    "[1, 2]",
    "{a: 1}",
    "|",
    ">",
    "&x",
    "*x",
    "!!str 1",
    "a: b",
    "-",
    "f(x)",
    "~/x",
    "/p",
    "_",
    "...",
]
_GOOD = ["x", "7", "1.5", "a b", "'q'", '"d#q"', "~", "true", "x@y", "job-1", "mcsched.io/v1"]
_indent = st.sampled_from([0, 0, 0, 0, 2, 2, 2, 4, 4, 1, 3, 6])
_value = st.none() | st.sampled_from(_GOOD) | st.sampled_from(_VALUES)
_line = st.one_of(
    st.tuples(_indent, st.sampled_from(_KEYS), _value, st.sampled_from(["", "", "", " ", "  # c", "#c"])).map(
        lambda t: " " * t[0] + t[1] + ":" + (" " + t[2] if t[2] is not None else "") + t[3]
    ),
    st.tuples(_indent, _value, st.sampled_from(["", "", " ", " # c"])).map(
        lambda t: " " * t[0] + "-" + (" " + t[1] if t[1] is not None else "") + t[2]
    ),
    st.sampled_from(["", "# c", "   # c", "---", "---", "...", "--- x", "a:b", "\ta: 1", "a : 1"]),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_line, min_size=1, max_size=14), st.booleans())
def test_the_scanner_agrees_with_libyaml_or_declines_on_any_block_text(lines: list[str], final_newline: bool) -> None:
    _assert_same_or_declined("\n".join(lines) + ("\n" if final_newline else ""))


@st.composite
def _block_text(draw: st.DrawFn) -> str:
    """A block-style stream of nested mappings and lists, sometimes with one line nudged or replaced."""
    step = draw(st.sampled_from([2, 2, 4, 1]))
    lines: list[str] = []
    # mostly values and keys the scanner reads, so that most streams test its output, not its declining
    values = st.none() | st.sampled_from(_GOOD * 8 + _VALUES)
    key_names = st.sampled_from(_KEYS[:8] * 8 + _KEYS)

    def extras(indent: int) -> None:
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from(["", "# c", " " * indent + "# c", "  "])))

    def mapping(indent: int, depth: int) -> None:
        keys = draw(st.lists(key_names, min_size=1, max_size=4, unique=draw(st.integers(0, 9)) > 0))
        for key in keys:
            extras(indent)
            kind = draw(st.integers(0, 5)) if depth < 3 else 0
            tail = draw(st.sampled_from(["", "", "", " ", "  # c"]))
            if kind <= 2:
                value = draw(values)
                lines.append(" " * indent + key + ":" + (" " + value if value is not None else "") + tail)
            elif kind <= 4:
                lines.append(" " * indent + key + ":" + tail)
                mapping(indent + step, depth + 1)
            else:
                lines.append(" " * indent + key + ":" + tail)
                at = indent + draw(st.sampled_from([0, step]))
                for _ in range(draw(st.integers(1, 3))):
                    value = draw(values)
                    lines.append(" " * at + "-" + (" " + value if value is not None else ""))

    for d in range(draw(st.integers(1, 3))):
        if d or draw(st.booleans()):
            lines.append("---")
        mapping(draw(st.sampled_from([0, 0, 0, 2])), 0)
    if draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = draw(st.sampled_from([" " + lines[i], lines[i][1:], "---", "  - x", "    y", "a:", "[x]"]))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n# end\n", "\n---\n"]))


@settings(max_examples=1500, deadline=None)
@given(_block_text())
def test_the_scanner_agrees_with_libyaml_or_declines_on_nested_block_text(text: str) -> None:
    _assert_same_or_declined(text)


@st.composite
def _same_layout_stream(draw: st.DrawFn) -> str:
    """Documents of one layout (keys, indents, nesting, comment lines) with values, value
    kinds, trailing spaces and comments drawn anew for each: what the remembered layouts match."""
    step = draw(st.sampled_from([2, 4, 1]))
    slots: list[tuple[str, bool]] = []  # (line up to its value, takes a value)

    def mapping(indent: int, depth: int) -> None:
        for j, key in enumerate(draw(st.lists(st.sampled_from(_KEYS[:8]), min_size=1, max_size=4, unique=True))):
            if j and draw(st.integers(0, 4)) == 0:
                slots.append((draw(st.sampled_from(["", "# c", " " * indent + "# c"])), False))
            kind = draw(st.integers(0, 5)) if depth < 2 else 0
            if kind <= 2:
                slots.append((" " * indent + key + ":", True))
            elif kind <= 4:
                slots.append((" " * indent + key + ":", False))
                mapping(indent + step, depth + 1)
            else:
                slots.append((" " * indent + key + ":", False))
                at = indent + draw(st.sampled_from([0, step]))
                slots.extend((" " * at + "-", True) for _ in range(draw(st.integers(1, 3))))

    mapping(0, 0)
    values = st.sampled_from(_GOOD * 6 + _VALUES)
    tails = st.sampled_from(["", "", "", "  ", " # note", "  #"])
    docs = []
    for _ in range(draw(st.integers(2, 6))):
        lines = []
        for head, takes in slots:
            if takes:
                lines.append(head + " " + draw(values) + draw(tails))
            elif head.endswith(":"):
                lines.append(head + draw(st.sampled_from(["", "", " ", " # opens"])))
            else:
                lines.append(head)
        docs.append("\n".join(lines) + "\n")
    return "---\n".join(docs)


@settings(max_examples=1000, deadline=None)
@given(_same_layout_stream())
def test_remembered_layouts_read_documents_as_libyaml_does(text: str) -> None:
    _assert_same_or_declined(text)


def test_a_generated_file_is_read_by_its_layouts_not_line_by_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's file has two layouts (with and without a workload): two documents are
    read line by line, the other 98 are matched whole, and all equal libyaml's."""
    reads = []
    real = yamlio._read_lines
    monkeypatch.setattr(yamlio, "_read_lines", lambda chunk, scalars: reads.append(chunk) or real(chunk, scalars))
    assert _assert_same_or_declined(_bench_like(100))
    assert len(reads) == 2


def test_the_scanner_does_read_most_generated_block_text() -> None:
    """The property above would pass with a scanner that declines everything: this one would not."""
    import random

    rng = random.Random(5)
    keys = ["a", "b", "c", "name"]
    values = ["x", "7", "1.5", "a b", "'q'", "~", "true", "x@y"]
    read = 0
    for _ in range(300):
        lines, depth = [], 0
        for j in range(rng.randrange(1, 8)):
            key = f"{keys[j % 4]}{j}"
            if depth < 2 and rng.random() < 0.3:
                lines.append("  " * depth + f"{key}:")
                depth += 1
                if rng.random() < 0.5:
                    lines += ["  " * depth + f"- {rng.choice(values)}" for _ in range(rng.randrange(1, 3))]
                    depth -= 1
                    continue
            lines.append("  " * depth + f"{key}: {rng.choice(values)}")
            if depth and rng.random() < 0.3:
                depth -= 1
        if lines[-1].endswith(":"):
            lines.append("z: 1")
        read += _assert_same_or_declined("\n".join(lines) + "\n")
    assert read >= 250


@pytest.mark.parametrize("resolve_all", [False, True])
def test_a_layouts_compiled_builder_builds_what_its_plan_does(resolve_all: bool) -> None:
    """Remembered layouts build documents with one generated function; it must give what the
    plan and the resolving loop give (also when every plain scalar must be resolved)."""
    text = "a: 1\nb:\n  c: x y\n  d:\n  - p\n  - 2.5\n  - 'q'\n  e: ~\nf: \"q # r\"\ng: true\nh: name\ni:\n  j:\n    k: 0\nl:\n"
    scalars = yamlio._SimpleScalars()
    scalars.resolve_all = resolve_all
    read = yamlio._read_lines(text.rstrip("\n"), scalars)
    assert read is not None
    layout, raw = read
    resolved = [scalars.value(v) if i in layout.plain else v for i, v in enumerate(raw)]
    want = yamlio._build(layout.plan, resolved)
    assert _typed(layout.builder(scalars)(tuple(raw))) == _typed(want) == _typed(yaml.safe_load(text))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["---", "\n", "-", "a", " ", "--", "\n---\n"]), max_size=12))
def test_separators_are_the_lines_that_are_exactly_three_dashes(parts: list[str]) -> None:
    import re

    text = "".join(parts)
    assert yamlio._separators(text) == [m.start() for m in re.finditer(r"^---$", text, re.MULTILINE)]
