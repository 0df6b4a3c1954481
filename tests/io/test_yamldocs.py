"""YAML specs through PyYAML's libyaml loader: the same data as ``yaml.safe_load_all``, the
line of every document and (on an error) of every field, and the defences (aliases, duplicate
keys, depth, document count, size), each refused in one line with its line number."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import SpecError
from scheduler.io import documents, load_documents, yamldocs
from scheduler.io.yamldocs import MAX_DEPTH, PureSpecLoader, SpecLoader, parse_documents
from scheduler.paths import examples_dir

SCALARS = """\
plain: hello
quoted: "012"
single: 'yes'
int: 42
zero: 0
negative: -7
plus: +7
octal: 012
hex: 0x1F
underscored: 1_000
sexagesimal: 1:30
float: 2.5
half: .5
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


def _typed(x: object) -> object:
    """``x`` with every value tagged by its type (``True == 1`` and ``1 == 1.0`` must not pass)."""
    if isinstance(x, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in x.items()])
    if isinstance(x, list):
        return ("list", [_typed(v) for v in x])
    return (type(x).__name__, x)


@pytest.fixture(params=["libyaml", "pure"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every behaviour holds on libyaml's loader and on the pure-Python fallback."""
    monkeypatch.setattr(yamldocs, "LOADER", SpecLoader if request.param == "libyaml" else PureSpecLoader)
    monkeypatch.setattr(yamldocs, "_noticed", True)
    return str(request.param)


def test_libyaml_is_the_loader_here() -> None:
    assert yaml.__with_libyaml__ and yamldocs.LOADER is SpecLoader
    assert issubclass(SpecLoader, yaml.CSafeLoader)
    assert not SpecLoader.yaml_path_resolvers and not PureSpecLoader.yaml_path_resolvers  # the no-op path hooks rely on it


def test_values_and_their_types_are_what_safe_load_gives(loader: str) -> None:
    (doc,) = parse_documents(SCALARS, "s.yaml")
    assert _typed(doc.data) == _typed(yaml.safe_load(SCALARS))


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_like, min_size=1, max_size=4), st.booleans())
def test_any_safe_dumped_stream_loads_back_unchanged(values: list[object], flow: bool) -> None:
    text = yaml.safe_dump_all(values, default_flow_style=flow)
    got = [_typed(d.data) for d in parse_documents(text, "h.yaml")]
    assert got == [_typed(v) for v in yaml.safe_load_all(text)]


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


def test_each_document_knows_its_line_and_finds_its_fields_lines(loader: str) -> None:
    docs = parse_documents(STREAM, "s.yaml")
    assert [d.line for d in docs] == [2, 7, 14, 20]
    assert docs[0].line_of(("metadata", "name")) == 5
    assert docs[1].line_of(("spec", "gpus")) == 10
    assert docs[2].line_of(("spec", "regions", 1)) == 19
    assert docs[2].line_of(("spec", "nope", "deeper")) == 17  # the deepest node that exists
    assert docs[3].line_of(("spec", "gpus")) == 20


def test_a_field_line_is_found_only_when_an_error_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading composes each document once; finding a field's line composes its document again,
    only for an error whose line is read (a file with an error in every document prints 20)."""
    from scheduler.loading import load_files

    composed: list[str] = []
    real = yamldocs.line_in_span
    monkeypatch.setattr(yamldocs, "line_in_span", lambda span, loc: composed.append(span) or real(span, loc))
    bad = tmp_path / "bad.yaml"
    bad.write_text("---\n".join(f"apiVersion: mcsched.io/v1\nkind: Job\nmetadata:\n  name: j{i}\nspec:\n  class: training\n  gpus: 1\n  gpuType: H100\n  colour: red\n" for i in range(500)))
    loaded, errors = load_files([bad])
    assert not loaded and len(errors) == 500 and composed == []
    assert errors[3].one_line() == f"{bad}:{3 * 10 + 9}: spec.colour: unknown field"
    assert len(composed) == 1


def test_aliases_are_refused_with_their_line(loader: str) -> None:
    with pytest.raises(SpecError) as bad:
        parse_documents("a: &x [1, 2]\nb: *x\n", "a.yaml")
    assert bad.value.one_line() == "a.yaml:1: YAML aliases/anchors are not allowed in specs"  # the anchor
    with pytest.raises(SpecError, match="aliases"):  # an alias PyYAML's constructor would take (a merge)
        parse_documents("base: &b {x: 1}\nm: {<<: *b, y: 2}\n", "m.yaml")
    bomb = "a: &a [x, x]\n" + "".join(f"{c}: &{c} [*{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    with pytest.raises(SpecError, match="aliases"):
        parse_documents(bomb, "bomb.yaml")


def test_duplicate_and_unhashable_keys_are_refused_with_their_line(loader: str) -> None:
    with pytest.raises(SpecError) as dup:
        parse_documents("spec:\n  gpus: 8\n  gpus: 16\n", "d.yaml")
    assert dup.value.one_line() == "d.yaml:3: invalid YAML: duplicate key 'gpus'"
    with pytest.raises(SpecError) as merged:  # also where a merge key sends the mapping to PyYAML's constructor
        parse_documents("a: 1\nm: {<<: {x: 1}, y: 2, y: 3}\n", "d.yaml")
    assert merged.value.one_line() == "d.yaml:2: invalid YAML: duplicate key 'y'"
    with pytest.raises(SpecError) as unhashable:
        parse_documents("ok: 1\n? [a, b]\n: 1\n", "k.yaml")
    assert unhashable.value.line == 2 and "key" in unhashable.value.reason


def test_nesting_is_bounded(loader: str) -> None:
    deep = "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    with pytest.raises(SpecError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        parse_documents(deep, "deep.yaml")
    ok = "a: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n"
    assert parse_documents(ok, "ok.yaml")[0].line == 1
    with pytest.raises(SpecError) as bomb:  # libyaml's own limit, or Python's recursion in the pure parser
        parse_documents("a: " + "[" * 100_000, "bomb.yaml")
    assert bomb.value.one_line().startswith("bomb.yaml") and "invalid YAML" in bomb.value.reason


def test_document_count_is_bounded(loader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_DOCUMENTS", 3)
    assert len(parse_documents("---\n".join(f"n: {i}\n" for i in range(3)), "three.yaml")) == 3
    with pytest.raises(SpecError, match="more than 3 documents"):
        parse_documents("---\n".join(f"n: {i}\n" for i in range(4)), "many.yaml")


def test_syntax_and_character_errors_name_the_line(loader: str) -> None:
    with pytest.raises(SpecError) as bad:
        parse_documents("a: 1\nb: [unclosed\nc: 3\n", "x.yaml")
    assert bad.value.line == 3 and bad.value.reason.startswith("invalid YAML: ")
    with pytest.raises(SpecError) as control:  # after a non-ASCII line: libyaml counts bytes, the line is still right
        parse_documents("a: caf\u00e9\u00e9\u00e9\nb: ok\nc: bell\x07\n", "c.yaml")
    assert control.value.line == 3 and "#x7" in control.value.reason
    with pytest.raises(SpecError) as tag:
        parse_documents("a: 1\nb: !!python/object:os.system x\n", "t.yaml")
    assert tag.value.line == 2 and "constructor" in tag.value.reason
    for err in (bad.value, control.value, tag.value):
        assert "\n" not in err.one_line()


def test_empty_documents_are_null_documents(loader: str) -> None:
    docs = parse_documents("# lead\na: 1\n---\n---\nb: 2\n", "e.yaml")
    assert [(d.data, d.line) for d in docs] == [({"a": 1}, 2), (None, 4), ({"b": 2}, 5)]
    assert parse_documents("# only a comment\n", "c.yaml") == []


def test_every_document_reports_progress(loader: str) -> None:
    calls: list[tuple[str, int, int]] = []
    docs = parse_documents("---\n".join(f"n: {i}\n" for i in range(50)), "p.yaml", lambda *a: calls.append(a))
    assert len(docs) == 50 and calls == [("reading", i, 50) for i in range(1, 51)]


def test_shipped_examples_load_as_safe_load_all_gives(loader: str) -> None:
    files = sorted(examples_dir().rglob("*.yaml"))
    assert len(files) > 3
    for f in files:
        assert [_typed(d.data) for d in load_documents(f)] == [_typed(v) for v in yaml.safe_load_all(f.read_text())], f


def test_without_libyaml_the_pure_loader_says_so_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(yamldocs, "LOADER", PureSpecLoader)
    monkeypatch.setattr(yamldocs, "_noticed", False)
    assert parse_documents(STREAM, "s.yaml")[2].line_of(("spec", "regions", 1)) == 19
    parse_documents("a: 1\n", "t.yaml")
    assert capsys.readouterr().err.count("without libyaml") == 1


def test_files_are_refused_in_one_line_when_missing_too_large_or_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(path: Path) -> str:
        with pytest.raises(SpecError) as bad:
            load_documents(path)
        return bad.value.one_line()

    assert refused(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"
    assert refused(tmp_path).endswith("is a directory, expected a YAML or JSON Lines file")
    big = tmp_path / "big.yaml"
    big.write_text("".join(f"k{i}: 1\n" for i in range(1000)))
    monkeypatch.setattr(documents, "MAX_SPEC_BYTES", 4096)
    assert refused(big) == f"{big}: file too large (0.0 MiB > 0 MiB limit)"
    monkeypatch.setattr(documents, "MAX_SPEC_BYTES", big.stat().st_size)  # the limit itself is allowed
    assert len(load_documents(big)) == 1
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: caf\xe9\n")
    assert refused(latin) == f"{latin}: not valid UTF-8 (byte 6)"


def test_the_size_limit_message_names_both_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (3 * 2**20))
    monkeypatch.setattr(documents, "MAX_SPEC_BYTES", 2 * 2**20)
    with pytest.raises(SpecError) as bad:
        load_documents(big)
    assert bad.value.one_line() == f"{big}: file too large (3.0 MiB > 2 MiB limit)"
