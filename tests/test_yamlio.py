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
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False) | st.text(max_size=8),
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
