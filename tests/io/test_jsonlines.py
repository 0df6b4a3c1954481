"""JSON Lines specs: one JSON object per line, decoded by msgspec, validated by the same models
as YAML, every problem as ``file:line: ...`` with the line it is on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scheduler.errors import SpecError
from scheduler.io import documents, load_documents
from scheduler.io.jsonlines import parse_json_lines
from scheduler.loading import load_files
from scheduler.paths import examples_dir

JOB = {"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": "a"}, "spec": {"class": "training", "gpus": 8, "gpuType": "H100"}}


def line(**spec: object) -> str:
    return json.dumps({**JOB, "spec": {**JOB["spec"], **spec}})  # type: ignore[dict-item]


def refused(text: bytes) -> str:
    with pytest.raises(SpecError) as bad:
        parse_json_lines(text, "j.jsonl")
    return bad.value.one_line()


def test_each_line_is_a_document_on_its_own_line_and_blank_lines_are_skipped() -> None:
    text = f"{line()}\n\n   \n{line(gpus=4)}\r\n{line(gpus=2)}".encode()
    docs = parse_json_lines(text, "j.jsonl")
    assert [(d.line, d.data["spec"]["gpus"]) for d in docs] == [(1, 8), (4, 4), (5, 2)]
    assert docs[1].line_of(("spec", "gpus")) == 4  # every field of a line is on that line


def test_the_shipped_job_mix_validates_the_same_as_json_lines(tmp_path: Path) -> None:
    mixed = examples_dir() / "jobs" / "mixed.yaml"
    as_jsonl = tmp_path / "mixed.jsonl"
    as_jsonl.write_text("".join(json.dumps(d) + "\n" for d in yaml.safe_load_all(mixed.read_text())))
    from_yaml, errors_yaml = load_files([mixed])
    from_jsonl, errors_jsonl = load_files([as_jsonl])
    assert not errors_yaml and not errors_jsonl
    assert [x.model for x in from_jsonl] == [x.model for x in from_yaml]
    assert [x.doc.line for x in from_jsonl] == list(range(1, len(from_yaml) + 1))


def test_undecodable_lines_are_refused_with_their_line() -> None:
    assert refused(f"{line()}\n{{\"kind\": \"Job\",\n".encode()) == "j.jsonl:2: invalid JSON: Input data was truncated"
    assert refused(f"{line()}\n{line()} x\n".encode()).startswith("j.jsonl:2: invalid JSON: JSON is malformed: trailing characters")
    assert refused(b"[1, 2]\n") == "j.jsonl:1: expected a JSON object with apiVersion/kind on each line, got `array`"
    assert refused(b'\n\n"Job"\n') == "j.jsonl:3: expected a JSON object with apiVersion/kind on each line, got `str`"
    assert refused(b'{"kind": "Job", "x": NaN}\n').startswith("j.jsonl:1: invalid JSON: ")
    assert refused(b'{"kind": "caf\xe9"}\n').startswith("j.jsonl:1: invalid JSON: ")  # not UTF-8


def test_a_key_given_twice_is_refused_as_in_yaml() -> None:
    assert refused(f'{line()}\n{{"kind": "Job", "spec": {{"gpus": 8, "gpus": 16}}}}\n'.encode()) == "j.jsonl:2: invalid JSON: duplicate key 'gpus'"
    # colons inside strings are not keys: a line with them and no duplicate loads
    (doc,) = parse_json_lines(b'{"kind": "Job", "spec": {"entrypoint": "python -c \'a: 1\'", "serve": {"model": "org/m:v1"}}}\n', "j.jsonl")
    assert doc.data["spec"]["serve"]["model"] == "org/m:v1"
    # a duplicate deep in a list, and one on a line with escapes (which could hide a colon), are found too
    assert refused(b'{"kind": "Job", "spec": {"regions": [{"a": 1, "a": 2}]}}\n') == "j.jsonl:1: invalid JSON: duplicate key 'a'"
    assert refused(b'{"kind": "Job", "x": "a\\u003a", "x": 1}\n') == "j.jsonl:1: invalid JSON: duplicate key 'x'"
    (doc,) = parse_json_lines(b'{"kind": "Job", "x": "a\\u003a\\"b"}\n', "j.jsonl")
    assert doc.data["x"] == 'a:"b'


def test_validation_errors_name_the_line_and_field(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join([line(), line(colour="red"), json.dumps({**JOB, "kind": "Jobb"}), line(gpus=0)]) + "\n")
    _, errors = load_files([jobs])
    assert [e.one_line() for e in errors] == [
        f"{jobs}:2: spec.colour: unknown field",
        f"{jobs}:3: kind: unknown kind 'Jobb' (expected one of CloudCatalog, Contract, Job, Scenario)",
        f"{jobs}:4: spec.gpus: Input should be greater than or equal to 1",
    ]


def test_suffix_picks_the_format_and_the_limits_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for suffix in (".jsonl", ".ndjson", ".JSONL"):
        path = tmp_path / f"jobs{suffix}"
        path.write_text(line() + "\n")
        assert load_documents(path)[0].data == json.loads(line())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert [e.one_line() for e in load_files([empty])[1]] == [f"{empty}: no JSON Lines documents in file"]
    many = tmp_path / "many.jsonl"
    many.write_text((line() + "\n") * 4)
    monkeypatch.setattr(documents, "MAX_DOCUMENTS", 3)
    with pytest.raises(SpecError, match="more than 3 documents"):
        load_documents(many)
    monkeypatch.setattr(documents, "MAX_SPEC_BYTES", 10)
    with pytest.raises(SpecError, match="file too large"):
        load_documents(many)


def test_progress_counts_documents_read(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    parse_json_lines(f"{line()}\n\n{line()}\n".encode(), "j.jsonl", lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [("reading", 1), ("reading", 2)]
