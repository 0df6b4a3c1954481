"""The JSON Lines fast path of ``mcsched plan`` (``scheduler.joblines``) against the general loader:
the same engine jobs, job for job, and None (so the general path reports) on anything else."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from scheduler.cli.offline import engine_jobs
from scheduler.joblines import _JobLine, _Metadata, _Spec, _Workload, is_plain_jsonl, load_engine_jobs
from scheduler.loading import load_catalog, load_contract, load_jobs
from scheduler.paths import default_catalog, default_contract
from scheduler.specs import JobDoc, JobSpec, Metadata, Workload
from tests.cli_runner import run

CATALOG = load_catalog(default_catalog())
CONTRACT = load_contract(default_contract(), CATALOG)


def doc(i: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": f"job-{i}"}, "spec": {"class": "training", "gpus": 8, "gpuType": "H100", **spec}}


def varied(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """Jobs using every field the fast path reads, defaults left out or given, nulls included."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cls = rng.choice(["training", "inference", "api-serving"])
        spec: dict[str, Any] = {"class": cls, "gpus": rng.choice([1, 2, 8, 16]), "gpuType": "H100" if cls == "api-serving" else rng.choice(["H100", "H200", "MI300X"])}
        if rng.random() < 0.5:
            spec["priority"] = rng.randrange(-1000, 1001)
        if rng.random() < 0.5:
            spec["durationHours"] = rng.choice([1, 2.5, 8760])
        if rng.random() < 0.3:
            spec["workload"] = rng.choice([{}, {"steps": 3}, {"steps": 4, "stepSeconds": 0, "checkpointEvery": 2, "failAtStep": 3}, {"failAtStep": None}])
        elif rng.random() < 0.3:
            spec["entrypoint"] = "python -c 'print(1): x'"
        for key in ("regions", "clouds", "jurisdiction", "terminationGracePeriodSeconds"):
            if rng.random() < 0.1:
                spec[key] = None
        if rng.random() < 0.1:
            spec["terminationGracePeriodSeconds"] = 60
        metadata: dict[str, Any] = {"name": f"job-{i}"}
        if rng.random() < 0.2:
            metadata["labels"] = {"team": "a:b"}
        out.append({"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": metadata, "spec": spec})
    return out


def write(path: Path, docs: list[dict[str, Any]], sep: str = "\n") -> Path:
    path.write_text(sep.join(json.dumps(d) for d in docs) + "\n")
    return path


def test_the_fast_path_builds_the_jobs_the_general_path_builds(tmp_path: Path) -> None:
    files = [write(tmp_path / "a.jsonl", varied(400)), write(tmp_path / "b.ndjson", [doc(1000 + i, gpus=4) for i in range(5)], sep="\n\n")]
    fast = load_engine_jobs(files, CATALOG, CONTRACT)
    general = engine_jobs(load_jobs(files, CATALOG, CONTRACT))
    assert fast is not None and len(fast) == 405
    assert fast == general
    # the same values to the type (the ledger records ``to_dict``): 1 hour is 1.0, defaults filled in
    assert msgspec.json.encode([j.to_dict() for j in fast]) == msgspec.json.encode([j.to_dict() for j in general])


@pytest.mark.parametrize(
    "bad",
    [
        doc(1, serve={"model": "m", "gpusPerReplica": 1}, **{"class": "api-serving"}),  # served models: the general path
        doc(1, colour="red"),  # unknown field
        doc(1, gpus=0),
        doc(1, gpus=8.0),  # strict: no float for an int
        doc(1, gpus=True),
        doc(1, gpuType="H 100"),
        doc(1, priority=1001),
        doc(1, durationHours=0),
        doc(1, regions=[]),
        doc(1, jurisdiction="eu"),
        doc(1, clouds=["nope"]),  # a rule of the loader: unknown cloud
        doc(1, gpus=4096),  # no pool is that large
        doc(1, entrypoint="x", workload={}),
        doc(1, workload={"steps": 0}),
        doc(1, entrypoint=""),
        {**doc(1), "kind": "Jobb"},
        {**doc(1), "metadata": {"name": "Upper"}},
        {**doc(1), "metadata": {"name": "job-1", "labels": {"a": 1}}},
        {**doc(1), "apiVersion": "v2"},
    ],
)
def test_anything_the_models_refuse_takes_the_general_path(tmp_path: Path, bad: dict[str, Any]) -> None:
    path = write(tmp_path / "j.jsonl", [doc(0), bad])
    assert load_engine_jobs([path], CATALOG, CONTRACT) is None
    if "serve" not in bad["spec"]:
        with pytest.raises(Exception):  # noqa: B017 - the general path's SpecErrors, whose lines other tests check
            load_jobs([path], CATALOG, CONTRACT)


def test_duplicates_escapes_and_other_files_take_the_general_path(tmp_path: Path) -> None:
    first = json.dumps(doc(0))
    dup = tmp_path / "dup.jsonl"
    dup.write_text(first + "\n" + '{"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": "b"}, "spec": {"class": "training", "gpus": 8, "gpus": 1, "gpuType": "H100"}}\n')
    assert load_engine_jobs([dup], CATALOG, CONTRACT) is None
    same_name = write(tmp_path / "same.jsonl", [doc(0), doc(0)])
    assert load_engine_jobs([same_name], CATALOG, CONTRACT) is None
    # an escape could hide a newline from a pattern's ``$``: the general path judges such a file
    escaped = tmp_path / "esc.jsonl"
    escaped.write_text(first.replace('"job-0"', '"job-0\\n"') + "\n")
    assert load_engine_jobs([escaped], CATALOG, CONTRACT) is None
    assert load_engine_jobs([tmp_path / "missing.jsonl"], CATALOG, CONTRACT) is None
    assert not is_plain_jsonl([dup, tmp_path / "x.yaml"]) and is_plain_jsonl([dup, tmp_path / "y.NDJSON"])


def test_plan_reports_a_bad_json_lines_file_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "j.jsonl", [doc(0), doc(1, colour="red"), doc(0)])
    code, out, err = run(["plan", "-o", "json", str(path)], capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"{path}:2: spec.colour: unknown field", f"{path}:3: metadata.name: duplicate job name 'job-0' (first defined at {path}:1)"]
    good = write(tmp_path / "g.jsonl", [doc(0), doc(1, gpus=2, workload={"steps": 2})])
    code, out, err = run(["plan", "-o", "json", str(good)], capsys)
    assert code == 0 and [d["job"] for d in json.loads(out)] == ["job-0", "job-1"]


def test_the_structs_have_the_fields_of_the_models() -> None:
    """A field added to a model without the fast path knowing it is refused by the structs
    (unknown field: the general path then runs), but this test says to add it."""
    names = {s: set(s.__struct_fields__) for s in (_JobLine, _Metadata, _Spec, _Workload)}
    assert names[_JobLine] == set(JobDoc.model_fields)
    assert names[_Metadata] == set(Metadata.model_fields)
    assert names[_Spec] == set(JobSpec.model_fields) - {"serve"}
    assert names[_Workload] == set(Workload.model_fields)
