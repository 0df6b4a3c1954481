"""The simulator drives the real engine: policies compare as they must, outputs are complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.ledger import Ledger
from scheduler.sim.simulator import Simulation
from scheduler.sim.traces import SpotTrace, TraceJob
from tests.builders import a_catalog, a_contract
from tests.shared import needs_shared, shared


def small_world():
    return (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 16}}, price=3.4)
        .cloud("oci", {"us-ashburn-1": {"H100": 64}}, price=2.9, startup=60)
        .cloud("aws", {"us-east-1": {"H100": 32}}, price=3.9, startup=30)
        .obj()
    )


def workload() -> list[TraceJob]:
    jobs = []
    for i in range(60):
        cls = "api-serving" if i % 5 == 0 else "training"
        jobs.append(TraceJob(f"j{i}", i * 60.0, 8 if i % 3 else 4, 1800.0, cls))
    return jobs


def run(policy: str) -> dict:
    sim = Simulation(small_world(), a_contract(), policy)
    sim.add_jobs(workload())
    sim.run()
    return sim.summary()


def test_policies_compare_as_the_contract_says() -> None:
    contract, cheapest, azure_only = run("contract"), run("cheapest"), run("azure-only")
    assert contract["contractViolations"] == {} and azure_only["contractViolations"] == {}
    assert sum(cheapest["contractViolations"].values()) > 0  # ignoring the ROFR breaks it, and the checker says so
    assert set(azure_only["jobsPerCloud"]) == {"azure"}
    assert cheapest["costUsdTotal"] < contract["costUsdTotal"]
    assert azure_only["holderShareOfGpuHours"] == 1.0 > contract["holderShareOfGpuHours"] > cheapest["holderShareOfGpuHours"]
    assert contract["waitSeconds"]["api-serving"]["count"] == 12
    assert contract["rofr"]["answers"]["declined"] > 0
    assert azure_only["waitSeconds"]["training"]["p95"] > contract["waitSeconds"]["training"]["p95"]


def test_capacity_trace_evicts_and_replaces_through_the_rofr() -> None:
    sim = Simulation(small_world(), a_contract(), "contract")
    sim.add_jobs(workload())
    spot = SpotTrace("zone-a", 600.0, (1, 1, 0, 0, 1, 0, 1, 1, 0, 1))
    assert sim.add_capacity_trace([spot], "oci", "H100") == ["us-ashburn-1 <- zone-a"]
    sim.run()
    s = sim.summary()
    assert s["preemptions"].get("capacity-lost", 0) > 0
    assert s["contractViolations"] == {}


def test_simulate_command_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t,n,d,c\n" + "".join(f"{i * 30},{1 + i % 8},{600 + i},{'api-serving' if i % 4 == 0 else 'training'}\n" for i in range(200)))
    out = tmp_path / "out"
    try:
        main(["simulate", "--trace", str(trace), "--format", "csv", "--columns", "arrival=t,gpus=n,duration=d,class=c", "--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    summary = json.loads((out / "summary.json").read_text())
    for key in ["jobsPerCloud", "rofr", "holderShareOfGpuHours", "waitSeconds", "costUsdPerCloud", "utilisation", "contractViolations"]:
        assert key in summary
    assert summary["trace"]["jobs"] == 200 and summary["jobs"] == 200
    for png in ["placements.png", "queue.png", "utilisation.png", "cost.png"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in (out / "report.md").read_text()
    assert Ledger(out / "ledger.db", readonly=True).verify().ok
    assert "200 jobs" in capsys.readouterr().out


def test_simulate_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("a,b\n1,2\n")
    for argv, expect in [
        (["--format", "parquet"], "unknown format"),
        (["--format", "csv", "--policy", "greedy"], "unknown policy"),
        (["--format", "csv"], "missing column(s) arrival, gpus, duration"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["simulate", "--trace", str(trace), "--out", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and expect in err and "Traceback" not in err


TRACES = shared("traces")


@needs_shared("traces")
def test_real_traces_replay_through_the_engine_with_a_verifiable_ledger(tmp_path: Path) -> None:
    from scheduler.loading import load_catalog, load_contract
    from scheduler.paths import default_catalog, default_contract
    from scheduler.sim.traces import read_alibaba, read_azure_llm, read_spot_dir

    catalog = load_catalog(default_catalog())
    contract = load_contract(default_contract(), catalog)
    ledger = Ledger(tmp_path / "alibaba.db")
    sim = Simulation(catalog, contract, "contract", sinks=[ledger])
    jobs = read_alibaba(TRACES / "alibaba-gpu-v2023" / "openb_pod_list_default.csv")
    sim.add_jobs(jobs)
    sim.add_capacity_trace(read_spot_dir(TRACES / "spot-availability"), "aws", "H100")
    sim.run(flush=ledger.flush)
    ledger.flush()
    s = sim.summary()
    assert s["jobs"] == len(jobs) == 6203 and s["contractViolations"] == {}
    assert sum(s["jobsPerCloud"].values()) >= len(jobs)
    assert ledger.verify().ok
    api = Simulation(catalog, contract, "contract")
    api.add_jobs(read_azure_llm(TRACES / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_code.csv"))
    api.run()
    a = api.summary()
    assert set(a["jobsPerCloud"]) == {"azure"} and a["contractViolations"] == {}  # API demand never leaves Azure
