"""The offline CLI: validate, plan, audit verify, and the one-line-error contract for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.paths import default_catalog, default_contract, examples_dir
from tests.bad_inputs import CASES, BadCase
from tests.cli_runner import run

MIXED = examples_dir() / "jobs" / "mixed.yaml"




def test_validate_accepts_the_shipped_examples(capsys) -> None:
    # every shipped resource (the simulator's cost file is a plain settings file: sim/costs.py reads it)
    # deploy/examples/blocks/ is a world of its own (a catalog with capacity blocks): checked alone
    own_world = examples_dir() / "blocks"
    files = [str(p) for p in sorted(examples_dir().rglob("*.yaml")) if p.name != "costs.yaml" and own_world not in p.parents]
    assert len(files) >= 10
    code, out, err = run(["validate", *files], capsys)
    assert code == 0, err
    assert "ok:" in out
    code, out, err = run(["validate", *map(str, sorted(own_world.glob("*.yaml")))], capsys)
    assert code == 0, err
    assert "ok:" in out


def test_plan_json_has_the_documented_fields(capsys) -> None:
    code, out, err = run(["plan", str(MIXED), "--output", "json", "--explain"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 13
    for row in rows:
        assert {
            "job",
            "class",
            "outcome",
            "cloud",
            "region",
            "gpuType",
            "gpus",
            "priceUsdPerHour",
            "rofr",
            "notUsed",
        } <= row.keys()
        assert {"holder", "answer", "reason"} <= row["rofr"].keys()
        if row["class"] == "api-serving":
            assert row["cloud"] == "azure"
        if row["cloud"] not in (None, "azure"):
            assert row["rofr"]["answer"] in ("declined", "lapsed", "not-offered")
    by = {r["job"]: r for r in rows}
    assert by["batch-embed"]["rofr"] == {"holder": "azure", "answer": "declined", "reason": "gpu-type-not-offered"}
    assert by["stargate-pretrain"]["cloud"] == "stargate"


def test_plan_queued_jobs_say_why(tmp_path: Path, capsys) -> None:
    jobs = tmp_path / "jobs.yaml"
    docs = [
        f"apiVersion: mcsched.io/v1\nkind: Job\nmetadata: {{name: api-{i}}}\nspec: {{class: api-serving, gpus: 64, gpuType: H100, regions: [japaneast]}}\n"
        for i in range(2)
    ]
    jobs.write_text("---\n".join(docs))
    code, out, _ = run(["plan", str(jobs), "-o", "json"], capsys)
    rows = json.loads(out)
    assert code == 0 and rows[1]["outcome"] == "queued"
    assert rows[1]["reason"] == "pinned-holder-declined" and rows[1]["cloud"] is None


def test_plan_match_mode_and_table_output(capsys) -> None:
    match = str(examples_dir() / "contract-match.yaml")
    code, out, _ = run(["plan", str(MIXED), "--contract", match, "-o", "json"], capsys)
    rows = {r["job"]: r for r in json.loads(out)}
    assert code == 0
    # Azure meets the best competing quote below its list price (3.40 for H100) ...
    eu = rows["eu-finetune"]
    assert (eu["cloud"], eu["rofr"]["answer"], eu["rofr"]["reason"]) == ("azure", "accepted", "matched")
    assert eu["priceUsdPerGpuHour"] < 3.40
    # ... but never below its floor for GB200 (5.00): that job spills after a recorded decline.
    rlhf = rows["rlhf-ppo"]
    assert (rlhf["cloud"], rlhf["rofr"]["reason"], rlhf["via"]) == ("stargate", "below-price-floor", "after-decline")
    code, table, _ = run(["plan", str(MIXED), "--contract", match], capsys)
    line = next(ln for ln in table.splitlines() if "eu-finetune" in ln)
    assert "azure/westeurope" in line and "accepted (matched)" in line


def test_plan_places_a_file_in_queue_order_and_shows_each_jobs_history(tmp_path: Path, capsys) -> None:
    # One file is one batch: its jobs arrive together and are placed in queue order
    # (docs/queueing.md, "Batches"), so the API job (priority 100) takes Azure's JP pool first,
    # without preempting the training job listed before it, which goes to another cloud.
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "apiVersion: mcsched.io/v1\nkind: Job\nmetadata: {name: train}\n"
        "spec: {class: training, gpus: 56, gpuType: H100, jurisdiction: JP}\n---\n"
        "apiVersion: mcsched.io/v1\nkind: Job\nmetadata: {name: api}\n"
        "spec: {class: api-serving, gpus: 32, gpuType: H100, jurisdiction: JP, priority: 100}\n"
    )
    code, out, err = run(["plan", str(jobs), "-o", "json", "--explain"], capsys)
    assert code == 0, err
    rows = {r["job"]: r for r in json.loads(out)}
    assert (rows["api"]["cloud"], rows["api"]["via"]) == ("azure", "rofr-accepted")
    train = rows["train"]
    assert train["cloud"] != "azure" and train["outcome"] == "placed"
    assert [h["what"] for h in train["history"]] == ["placed"]
    assert train["rofr"]["answer"] == "declined"  # offered to Azure first all the same


def test_plan_writes_a_ledger_that_verifies(tmp_path: Path, capsys) -> None:
    db = tmp_path / "ledger.db"
    assert run(["plan", str(MIXED), "--db", str(db)], capsys)[0] == 0
    code, out, _ = run(["audit", "verify", "--db", str(db)], capsys)
    assert code == 0 and "OK:" in out
    code, _, err = run(["plan", str(MIXED), "--db", str(db)], capsys)
    assert code == 2 and "already holds" in err  # bad input, as docs/cli.md says: never bad evidence (1)


def test_audit_verify_names_the_first_bad_record(tmp_path: Path, capsys) -> None:
    import sqlite3

    db = tmp_path / "ledger.db"
    run(["plan", str(MIXED), "--db", str(db)], capsys)
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER records_no_update")
    seq = conn.execute("SELECT seq FROM records WHERE CAST(leaf AS TEXT) LIKE '%coreweave%\"kind\":\"placed\"%'").fetchone()[0]
    conn.execute("UPDATE records SET leaf = CAST(replace(CAST(leaf AS TEXT), 'coreweave', 'gcp') AS BLOB) WHERE seq = ?", (seq,))
    conn.commit()
    conn.close()
    code, _, err = run(["audit", "verify", "--db", str(db)], capsys)
    assert code == 1 and "FAIL: record 1: records 1.." in err and "do not match the signed checkpoint" in err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: BadCase, tmp_path: Path, capsys) -> None:
    path = tmp_path / f"{case.target}.yaml"
    path.write_bytes(case.content)
    db = tmp_path / "ledger.db"
    argv = ["plan", "--db", str(db)]
    if case.target == "job":
        argv += [str(path)]
    else:
        argv += ["--clouds" if case.target == "catalog" else "--contract", str(path), str(MIXED)]
    code, _, err = run(argv, capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln]
    assert lines and all(ln.startswith(str(path)) for ln in lines), err
    assert case.expect in err, err
    assert "Traceback" not in err
    assert not db.exists()


def test_a_file_over_64_mib_is_refused_without_reading_it(tmp_path: Path, capsys) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(65 * 1024 * 1024)
    code, _, err = run(["validate", str(big)], capsys)
    assert code == 2 and "file too large (65.0 MiB > 64 MiB limit)" in err


def test_missing_file_and_directory(tmp_path: Path, capsys) -> None:
    assert "no such file" in run(["validate", str(tmp_path / "nope.yaml")], capsys)[2]
    code, _, err = run(["validate", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in err


def test_duplicate_names_across_files(tmp_path: Path, capsys) -> None:
    code, _, err = run(["plan", str(MIXED), str(MIXED)], capsys)
    assert code == 2 and "duplicate job name 'gpt-pretrain'" in err


def test_errors_report_the_line(tmp_path: Path, capsys) -> None:
    f = tmp_path / "j.yaml"
    f.write_text(
        "apiVersion: mcsched.io/v1\nkind: Job\nmetadata:\n  name: x\nspec:\n  class: training\n  gpus: -4\n  gpuType: H100\n"
    )
    code, _, err = run(["validate", str(f)], capsys)
    assert code == 2 and err.strip() == f"{f}:7: spec.gpus: Input should be greater than or equal to 1"


def test_console_script_and_python_m_agree() -> None:
    """``python -m scheduler`` is the same program the Ray CLI path runs."""
    env = {**os.environ, "COLUMNS": "200"}
    a = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler",
            "plan",
            str(MIXED),
            "-o",
            "json",
            "--clouds",
            str(default_catalog()),
            "--contract",
            str(default_contract()),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(a.stdout)[0]["job"] == "gpt-pretrain"
    bad = subprocess.run([sys.executable, "-m", "scheduler", "validate", "/nonexistent.yaml"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "/nonexistent.yaml: no such file"


def test_plan_places_a_served_model_as_its_minimum_replicas(tmp_path: Path, capsys) -> None:
    served = tmp_path / "served.yaml"
    served.write_text(
        "apiVersion: mcsched.io/v1\nkind: Job\nmetadata: {name: chat}\n"
        "spec: {class: api-serving, gpuType: H100, priority: 100,"
        " serve: {model: mock-chat, gpusPerReplica: 8, replicas: {min: 2, max: 4}}}\n"
    )
    code, out, err = run(["plan", str(served), "-o", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["job"], r["gpus"], r["cloud"]) for r in rows] == [("chat-r1", 8, "azure"), ("chat-r2", 8, "azure")]


def test_an_unknown_job_from_the_actor_says_why_it_may_not_be_known_yet() -> None:
    """`mcsched status JOB` right after `mcsched submit` (the README's order) meets a job whose
    driver has not started: the one line says so, and keeps the unknown-job exit code."""
    from scheduler.cli.app import UNKNOWN_JOB_HINT, remote_error
    from scheduler.errors import AdmissionError, MCSchedError, UnknownJobError

    e = remote_error(UnknownJobError("unknown job 'gpt-pretrain'"), RuntimeError("ray wrapper\ntraceback"))
    assert isinstance(e, UnknownJobError) and e.exit_code == 2
    assert str(e) == f"unknown job 'gpt-pretrain': {UNKNOWN_JOB_HINT}" and "\n" not in str(e)
    other = remote_error(ValueError("bad fault\nmore"), RuntimeError("wrapper"))
    assert type(other) is MCSchedError and str(other) == "bad fault" and other.exit_code == 1
    refused = remote_error(AdmissionError("unknown cloud 'nocloud'"), RuntimeError("wrapper"))  # `mcsched drain nocloud`: was exit 1
    assert str(refused) == "unknown cloud 'nocloud'" and refused.exit_code == 2
    assert str(remote_error(None, RuntimeError("actor died\ntraceback"))) == "actor died"


def test_status_history_is_timed_from_the_jobs_first_step() -> None:
    """The live scheduler's clock is the epoch: `status --explain` showed `t=1796228857s placed ...`.
    Steps read as seconds since the job's first one (plan's clock starts at 0: unchanged there)."""
    from rich.console import Console

    from scheduler.decision import Decision
    from scheduler.render import decisions_table

    epoch = 1_796_228_857.0
    d = Decision(job="pretrain-jp", cls="training", outcome="cancelled", gpu_type="H100", gpus=48, holder="azure",
                 rofr_answer="accepted", rofr_reason="accepted", cloud="azure", region="japaneast", price=3.4,
                 history=((epoch, "placed", "azure", "japaneast", "rofr-accepted"),
                          (epoch + 16, "evicted", "azure", "japaneast", "preempted by api-jp"),
                          (epoch + 58.4, "ended", "azure", "japaneast", "cancelled")))
    console = Console(width=400, record=True)
    console.print(decisions_table([d], explain=True))
    text = console.export_text()
    assert "t=0s placed azure/japaneast (rofr-accepted)" in text
    assert "t=16s evicted azure/japaneast (preempted by api-jp)" in text and "t=58s ended" in text
    assert "1796228" not in text


def test_cross_job_rules_still_judge_each_job_after_clean_ones_like_it(tmp_path: Path, capsys) -> None:
    """The cross-job checks remember constraint sets that passed (a 100k-job file repeats a few
    hundred): a job like a clean one but for its gang size or served-model name is still judged."""
    long = "m" * 60
    docs = [
        "metadata: {name: a}\nspec: {class: training, gpus: 8, gpuType: H100}",
        "metadata: {name: b}\nspec: {class: training, gpus: 8, gpuType: H100}",
        "metadata: {name: c}\nspec: {class: training, gpus: 3000, gpuType: H100}",
        "metadata: {name: chat}\nspec: {class: api-serving, gpuType: H100, serve: {model: x, gpusPerReplica: 8, replicas: {max: 10}}}",
        f"metadata: {{name: {long}}}\nspec: {{class: api-serving, gpuType: H100, serve: {{model: x, gpusPerReplica: 8, replicas: {{max: 10}}}}}}",
    ]
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("---\n".join(f"apiVersion: mcsched.io/v1\nkind: Job\n{d}\n" for d in docs))
    code, _, err = run(["validate", str(jobs)], capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{jobs}:14: spec.gpus: 3000 GPUs can never fit: the largest allowed H100 pool has 1536",
        f"{jobs}:23: metadata.name: too long for a served model: replica jobs are named {long}-r<k> (at most 63 characters)",
    ]
