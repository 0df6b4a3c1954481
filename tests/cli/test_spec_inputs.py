"""The commands that read job files (validate, plan, submit): JSON Lines beside YAML, errors
capped at twenty lines and a count, exit 2, and the collector left to the entry point."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import yaml

import scheduler.cli as cli
from scheduler.cli import main
from scheduler.gctune import GC_THRESHOLDS
from scheduler.paths import examples_dir
from tests.cli_runner import run

MIXED = examples_dir() / "jobs" / "mixed.yaml"




def as_jsonl(tmp_path: Path, source: Path = MIXED) -> Path:
    out = tmp_path / (source.stem + ".jsonl")
    out.write_text("".join(json.dumps(d) + "\n" for d in yaml.safe_load_all(source.read_text())))
    return out


def bad_jobs(path: Path, n: int) -> Path:
    """``n`` jobs, each with an unknown field (YAML or JSON Lines by the suffix)."""
    jobs = [{"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": f"j{i}"}, "spec": {"class": "training", "gpus": 1, "gpuType": "H100", "colour": "red"}} for i in range(n)]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    else:
        path.write_text(yaml.safe_dump_all(jobs, sort_keys=False))
    return path


def test_plan_reads_json_lines_as_it_reads_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, from_yaml, _ = run(["plan", str(MIXED), "-o", "json", "--explain"], capsys)
    code, from_jsonl, err = run(["plan", str(as_jsonl(tmp_path)), "-o", "json", "--explain"], capsys)
    assert code == 0, err
    assert from_jsonl == from_yaml and len(json.loads(from_jsonl)) == 13


def test_validate_reads_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["validate", str(as_jsonl(tmp_path)), str(MIXED)], capsys)
    assert code == 2 and "duplicate job name" in err  # the same jobs twice, across formats
    first = err.splitlines()[0]
    assert first.startswith(f"{MIXED}:") and ".jsonl:1)" in first  # first defined on line 1 of the JSON Lines file
    code, out, err = run(["validate", str(as_jsonl(tmp_path))], capsys)
    assert (code, err) == (0, "") and out.startswith("ok: 13 document(s) in 1 file(s)")


def test_submit_reads_json_lines_before_it_looks_for_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    state = ["--state-dir", str(tmp_path / "state")]
    code, _, err = run(["submit", str(bad_jobs(tmp_path / "bad.jsonl", 3)), *state], capsys)
    assert code == 2 and err.splitlines()[0] == f"{tmp_path / 'bad.jsonl'}:1: spec.colour: unknown field"
    code, _, err = run(["submit", str(as_jsonl(tmp_path)), *state], capsys)
    assert code == 3 and "mcsched up" in err and "jsonl" not in err  # loaded and checked; only the cluster is missing (exit 3, docs/cli.md)


@pytest.mark.parametrize("command", ["validate", "plan", "submit"])
@pytest.mark.parametrize("suffix", [".yaml", ".jsonl"])
def test_thousands_of_errors_print_twenty_and_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, suffix: str) -> None:
    path = bad_jobs(tmp_path / f"bad{suffix}", 1500)
    code, out, err = run([command, str(path), "--state-dir", str(tmp_path)] if command == "submit" else [command, str(path)], capsys)
    lines = err.splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 21
    assert lines[-1] == "... and 1480 more errors (1500 in total)"
    first_line = 1 if suffix == ".jsonl" else 9  # YAML: spec.colour is the 9th line of the first document
    assert lines[0] == f"{path}:{first_line}: spec.colour: unknown field"
    assert all(ln.startswith(f"{path}:") and ln.endswith("spec.colour: unknown field") for ln in lines[:20])


def test_twenty_errors_print_without_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", str(bad_jobs(tmp_path / "bad.jsonl", 20))], capsys)
    assert code == 2 and len(err.splitlines()) == 20 and "more errors" not in err


def test_loading_and_rendering_leave_the_collector_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Library code (the loader, the checks, the renderer) never switches the collector: only the
    process's entry point may. (The engine is checked with the engine.)"""
    from scheduler.decision import Decision
    from scheduler.loading import load_files
    from scheduler.render import decisions_json, decisions_ndjson

    def forbidden(*args: object) -> None:
        raise AssertionError("a library call changed the garbage collector's settings")

    for name in ("disable", "enable", "freeze", "unfreeze", "set_threshold"):
        monkeypatch.setattr(gc, name, forbidden)
    for files in ([MIXED], [as_jsonl(tmp_path)], [examples_dir() / "catalog.yaml", examples_dir() / "contract.yaml"]):
        code, _, err = run(["validate", *map(str, files)], capsys)
        assert code == 0, err
    loaded, errors = load_files([bad_jobs(tmp_path / "bad.yaml", 50), MIXED])
    assert len(loaded) == 13 and len(errors) == 50 and all(e.line for e in errors)
    d = Decision(job="a", cls="training", outcome="queued", gpu_type="H100", gpus=1, holder="azure", rofr_answer="declined", rofr_reason="")
    assert decisions_json([d]) and decisions_ndjson([d])
    assert gc.isenabled()


def test_the_process_entry_point_tunes_the_collector(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    tuned: list[bool] = []
    monkeypatch.setattr(cli, "tune_gc", lambda: tuned.append(True))
    monkeypatch.setattr("sys.argv", ["mcsched", "validate", str(MIXED)])
    main()  # the ``mcsched`` script's call: the process is this command's
    assert tuned == [True] and "ok: 13" in capsys.readouterr().out
    run(["validate", str(MIXED)], capsys)  # a caller passing argv (a test, an embedding program) keeps its own settings
    assert tuned == [True]
    monkeypatch.undo()
    before = gc.get_threshold()
    try:
        cli.tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_validate_checks_jobs_against_the_catalog_given_by_clouds_and_says_which(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--clouds`` wins over a catalog among the files (it used to be ignored silently), and the
    ``ok`` line names the catalog and contract the jobs were checked against."""
    blocks, shipped, jp = examples_dir() / "blocks" / "catalog.yaml", examples_dir() / "catalog.yaml", examples_dir() / "lifecycle" / "train.yaml"
    code, out, err = run(["validate", "--clouds", str(blocks), str(shipped), str(jp)], capsys)
    assert code == 2 and err.strip() == f"{jp}:8: spec: no allowed cloud/region offers H100 with jurisdiction JP (clouds allowed for training: aws, azure, oci)"
    code, out, err = run(["validate", str(shipped), str(jp)], capsys)
    assert code == 0 and out.strip() == f"ok: 2 document(s) in 2 file(s) (jobs checked against {shipped} and the shipped example contract)"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("---\n---\n", "empty document (a spec is a mapping with apiVersion, kind, metadata and spec)"),
        ("apiVersion: mcsched.io/v1\nmetadata: {name: x}\n", "kind: required field is missing (one of CloudCatalog, Contract, Job, Scenario)"),
        ("- a\n- b\n", "expected a mapping with apiVersion, kind, metadata and spec, got a list"),
    ],
    ids=["empty", "no-kind", "list"],
)
def test_a_document_that_is_not_a_spec_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    code, _out, err = run(["validate", str(path)], capsys)
    assert code == 2 and says in err and "NoneType" not in err and "kind None" not in err, err


def test_a_misspelt_holder_is_one_error_when_the_pins_are_derived_from_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pins not written in the contract derive from the holder: its typo must not also be
    reported as an unknown cloud in a pin the user never wrote."""
    from scheduler.paths import default_contract

    doc = yaml.safe_load(default_contract().read_text())
    doc["spec"]["rofr"]["holder"] = "azur"
    doc["spec"].pop("pins", None)
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, _out, err = run(["validate", str(path)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "spec.rofr.holder: unknown holder 'azur'" in lines[0], err
