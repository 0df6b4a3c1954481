"""``mcsched simulate`` end to end: outputs, the policy comparison, and every bad input as one line, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.ledger import Ledger
from scheduler.paths import examples_dir
from tests.sim.shared import TRACES, needs_traces

PNG = b"\x89PNG\r\n\x1a\n"
CATALOG = """apiVersion: mcsched.io/v1
kind: CloudCatalog
metadata: {name: t}
spec:
  backends:
    - {name: azure, latencySeconds: 2, startupSeconds: 120, prices: {H100: 3.4}, regions: [{name: eastus, jurisdiction: US, gpus: {H100: 16}}]}
    - {name: oci, latencySeconds: 3, startupSeconds: 60, prices: {H100: 2.9}, regions: [{name: us-ashburn-1, jurisdiction: US, gpus: {H100: 32}}]}
    - {name: aws, latencySeconds: 2, startupSeconds: 240, prices: {H100: 3.9}, regions: [{name: us-east-1, jurisdiction: US, gpus: {H100: 8}}]}
    - {name: stargate, prices: {GB200: 4.9}, regions: [{name: abilene-tx, jurisdiction: US, gpus: {GB200: 64}}]}
"""


def simulate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["simulate", *argv])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, str]:
    trace = tmp_path / "t.csv"
    rows = "".join(f"{i * 30},{1 + i % 8},{600 + i},{'api-serving' if i % 4 == 0 else 'training'}\n" for i in range(120))
    trace.write_text("t,n,d,c\n" + rows)
    (tmp_path / "clouds.yaml").write_text(CATALOG)
    return {
        "trace": str(trace),
        "clouds": str(tmp_path / "clouds.yaml"),
        "columns": "arrival=t,gpus=n,duration=d,class=c",
        "out": str(tmp_path / "out"),
    }


def base(i: dict[str, str]) -> list[str]:
    return ["--trace", i["trace"], "--format", "csv", "--columns", i["columns"], "--clouds", i["clouds"], "--out", i["out"]]


def test_simulate_writes_a_report_a_planner_reads(inputs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = simulate(base(inputs), capsys)
    assert code == 0, err
    o = Path(inputs["out"])
    summary = json.loads((o / "summary.json").read_text())
    assert summary["jobs"] == 120 and summary["inputs"]["trace"]["jobs"] == 120
    for key in ["gpuHours", "waitSeconds", "utilisation", "costUsdPerServedGpuHour", "holderShareOfGpuHours", "contractViolations", "spillRanking"]:
        assert key in summary
    report = (o / "report.md").read_text()
    assert report.splitlines()[0] == "# " + out.splitlines()[0]  # the headline leads both
    assert "jobs over 1.2 hours" in out.splitlines()[1]  # the horizon (last arrival + longest job), not "0.1 simulated days"
    for png in ["utilisation.png", "queue.png", "classes.png", "cost.png", "rofr.png"]:
        assert (o / png).read_bytes()[:8] == PNG and f"]({png})" in report
    for rule in ("CSV fields: arrival=t:s, gpus=n, duration=d:s, class=c", "class api-serving -> api-serving", "class priorities api-serving=100"):
        assert rule in report
    assert "No ledger was written" in report and not (o / "ledger.db").exists()  # off unless asked for, and the report says so


def test_a_ledger_on_request_is_signed_with_a_throwaway_key_named_in_the_report(
    inputs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    o = Path(inputs["out"])
    code, out, err = simulate([*base(inputs), "--no-plots", "--ledger", str(o / "ledger.db")], capsys)
    assert code == 0, err
    s = json.loads((o / "summary.json").read_text())
    led = s["ledger"]
    assert led["path"] == str(o / "ledger.db") and len(led["keyId"]) == 16
    verified = Ledger(o / "ledger.db", readonly=True).verify(public_key=led["publicKey"])
    assert verified.ok and "signed checkpoints" in verified.line()
    assert f"key id `{led['keyId']}`" in (o / "report.md").read_text() and led["keyId"] in out
    assert not list(o.parent.glob("**/ledger-signing.key"))  # the private half is gone


def test_a_re_run_replaces_its_own_ledger_but_never_another_file(
    inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--ledger` used to overwrite whatever was there, an audit ledger included (evidence gone,
    exit 0). A replay's own ledger has its public key beside it (FILE.pub); only that pair is replaced."""
    own = tmp_path / "sim.db"
    for _ in range(2):  # the second run replaces the first one's ledger
        code, _out, err = simulate([*base(inputs), "--no-plots", "--ledger", str(own)], capsys)
        assert code == 0, err
    assert Ledger(own, readonly=True).verify(public_key=f"{own}.pub").ok
    for name, content in (("audit.db", own.read_bytes()), ("notes.txt", b"mine\n")):
        other = tmp_path / name
        other.write_bytes(content)  # a ledger without its .pub beside it, or any file
        code, _out, err = simulate([*base(inputs), "--no-plots", "--ledger", str(other)], capsys)
        assert code == 2 and err.strip() == (
            f"error: --ledger: {other} exists and is not a ledger an earlier `mcsched simulate` wrote "
            f"(no {name}.pub beside it); simulate replaces only its own: pass a new path"
        )
        assert other.read_bytes() == content
    several = tmp_path / "cmp.db"
    (tmp_path / "cmp-cheapest.db").write_bytes(b"x")  # with several policies, each policy's file is checked
    code, _out, err = simulate([*base(inputs), "--no-plots", "--policy", "contract,cheapest", "--ledger", str(several)], capsys)
    assert code == 2 and f"--ledger: {tmp_path / 'cmp-cheapest.db'} exists" in err
    assert not (tmp_path / "cmp-contract.db").exists()


def test_one_command_compares_policies_side_by_side(inputs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.sim.report import plot_comparison

    code, out, err = simulate([*base(inputs), "--policy", "contract,cheapest,azure-only", "--load", "4", "--no-plots",
                               "--ledger", str(Path(inputs["out"]) / "ledger.db")], capsys)
    assert code == 0, err
    o = Path(inputs["out"])
    report = (o / "report.md").read_text()
    assert "|  | contract | cheapest | azure-only |" in report and "## Policy azure-only" in report
    summary = json.loads((o / "summary.json").read_text())["policies"]
    assert set(summary) == {"contract", "cheapest", "azure-only"}
    assert summary["azure-only"]["holderShareOfGpuHours"] == 1.0 > summary["contract"]["holderShareOfGpuHours"]
    assert sum(summary["cheapest"]["contractViolations"].values()) > 0 and summary["contract"]["contractViolations"] == {}
    for p in ("contract", "azure-only"):
        db = o / f"ledger-{p}.db"
        assert Ledger(db, readonly=True).verify(public_key=f"{db}.pub").ok
        assert json.loads((o / p / "summary.json").read_text())["policy"] == p
    assert "load x4" in out
    # the chart the command draws with plots on (kept out of this run: plotting is the slow part)
    assert (o / plot_comparison(summary, "t.csv · load x4", o)).read_bytes()[:8] == PNG


def test_the_report_states_the_contracts_spill_ranking_and_class_priorities(
    inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contract = tmp_path / "contract.yaml"
    contract.write_text(
        "apiVersion: mcsched.io/v1\nkind: Contract\nmetadata: {name: c}\nspec:\n"
        "  rofr: {holder: azure, mode: first-look, windowSeconds: 30, onLapse: deemed-declined}\n"
        "  scoring: {spill: start-first}\n  classPriorities: {training: 200}\n"
    )
    code, _out, err = simulate([*base(inputs), "--contract", str(contract), "--no-plots"], capsys)
    assert code == 0, err
    report = (Path(inputs["out"]) / "report.md").read_text()
    assert "- Spill ranking after a decline or lapse: start-first (the contract's spec.scoring.spill: earliest start, then price)" in report
    assert "class priorities api-serving=100, inference=50, training=200 (the contract's spec.classPriorities)" in report
    code, _out, err = simulate([*base(inputs), "--contract", str(contract), "--no-plots", "--class-priorities", "training=0"], capsys)
    assert code == 0, err
    assert "training=0 (--class-priorities)" in (Path(inputs["out"]) / "report.md").read_text()


def test_a_stranded_api_says_so_first(inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "down.yaml"
    scenario.write_text("apiVersion: mcsched.io/v1\nkind: Scenario\nmetadata: {name: down}\nspec:\n  events:\n    - {at: 0, backend: azure, up: false}\n")
    code, out, err = simulate([*base(inputs), "--scenario", str(scenario), "--no-plots"], capsys)
    assert code == 0, err
    assert out.startswith("API STRANDED under contract: 30 api-serving jobs never started")
    report = (Path(inputs["out"]) / "report.md").read_text()
    assert report.startswith("# API STRANDED") and "scenario down (down.yaml)" in report and "0 seconds: azure down" in report


def test_a_capacity_trace_on_a_cloud_without_work_warns(inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spot = tmp_path / "spot"
    spot.mkdir()
    (spot / "us-east-1a_v100_1.json").write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": [1, 0, 1, 1]}))
    # at a tenth of the load azure and oci take everything: aws, the driven cloud, never gets work
    code, _out, err = simulate([*base(inputs), "--load", "0.1", "--capacity-trace", str(spot), "--capacity-cloud", "aws", "--no-plots"], capsys)
    assert code == 0, err
    assert "warning: the capacity trace drives aws, but aws never received work under contract" in err
    report = (Path(inputs["out"]) / "report.md").read_text()
    assert "> **Warning:** the capacity trace drives aws" in report
    assert "us-east-1a -> aws/us-east-1/H100 (same region; spot share 100%)" in report


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--format", "parquet"], "unknown trace format 'parquet'"),
        (["--policy", "greedy"], "--policy: unknown policy 'greedy'"),
        (["--policy", "contract,contract"], "names a policy twice"),
        (["--columns", "arrival=t"], "missing column(s) gpus (none of gpus, num_gpu, num_gpus, gpu_count, ngpus; name it with --columns gpus=COLUMN), duration"),
        (["--load", "0"], "--load: must be a number > 0"),
        (["--gpu-map", "*=B200"], "the trace asks for B200, which no cloud in the catalog has"),
        (["--class-priorities", "api-serving=high"], "--class-priorities: api-serving=high: must be a whole number"),
        (["--scale-capacity", "nimbus=0.5"], "--scale-capacity: nimbus=0.5: unknown cloud 'nimbus'"),
        (["--capacity-trace", "SPOT", "--capacity-cloud", "stargate"], "--capacity-cloud: stargate has no H100 pools (it has GB200)"),
        (["--capacity-trace", "SPOT"], "say which pools it drives"),
        (["--capacity-cloud", "aws"], "need --capacity-trace DIR"),
        (["--scenario", "SCENARIO"], "scenario.yaml:6: spec.events[0].backend: unknown backend 'nimbus'"),
        (["--replica", "gpusPerReplica=4"], "--replica: only the azure-llm format"),
        (["--capacity-trace", "SPOT", "--capacity-map", "us-east-1a=nimbus/eastus/H100"],
         "--capacity-map: us-east-1a=nimbus/eastus/H100: unknown cloud 'nimbus' (the catalog has azure, oci, aws, stargate)"),
        (["--capacity-trace", "SPOT", "--capacity-map", "us-east-1a=stargate/abilene-tx/H100"],
         "--capacity-map: us-east-1a=stargate/abilene-tx/H100: stargate/abilene-tx has no H100 pool (it has GB200)"),
        (["--capacity-trace", "SPOT", "--capacity-map", "us-east-1a=aws/us-east-1/H100", "--capacity-cloud", "aws"], "--capacity-cloud/--capacity-map: give one of them"),
        (["--class-map", "api-serving"], "--class-map: bad mapping 'api-serving' (expected KEY=VALUE)"),
        (["--class-map", "api-serving=web"], "--class-map: api-serving=web: unknown value 'web'"),
        (["--class-map", "web=api-serving"], "--class-map: web=api-serving: no row of t.csv has c 'web' (it has api-serving, training)"),
        (["--trace", "BADCSV"], "bad.csv:3: n: not a number: 'x' (use --skip-bad-rows to count and skip)"),
        (["--out", "FILE"], "--out: FILE is a file, not a directory"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expect: str
) -> None:
    spot = tmp_path / "spot"
    spot.mkdir()
    (spot / "us-east-1a_v100_1.json").write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": [1, 0]}))
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("apiVersion: mcsched.io/v1\nkind: Scenario\nmetadata: {name: s}\nspec:\n  events:\n    - {at: 5, backend: nimbus, up: false}\n")
    argv = base(inputs)
    if "--format" in extra:
        argv = [a for a in argv if a != "csv"]
        argv.remove("--format")
    bad = tmp_path / "bad.csv"
    bad.write_text("t,n,d,c\n0,8,600,training\n30,x,600,training\n")
    file = tmp_path / "FILE"
    file.write_text("not a directory\n")
    argv += [{"SPOT": str(spot), "SCENARIO": str(scenario), "BADCSV": str(bad), "FILE": str(file)}.get(x, x) for x in extra]
    code, _out, err = simulate(argv, capsys)
    expect = expect.replace("FILE", str(file))
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not Path(inputs["out"]).exists() and file.read_text() == "not a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "bad.csv", "clouds.yaml", "scenario.yaml", "spot", "t.csv"]  # nothing written


@needs_traces
def test_real_traces_replay_with_priorities_and_a_verifiable_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """openb on the Azure-constrained example catalog: the contract binds, the API preempts, the ledger verifies."""
    out = tmp_path / "openb"
    code, _, err = simulate(
        [
            "--trace", str(TRACES / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"), "--format", "alibaba-openb",
            "--clouds", str(examples_dir() / "sim" / "catalog-azure-tight.yaml"), "--load", "4", "--out", str(out), "--no-plots",
            "--scenario", str(examples_dir() / "sim" / "scenario-azure-outage.yaml"), "--ledger", str(tmp_path / "openb.db"),
        ],
        capsys,
    )
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert s["jobs"] == 6203 and s["contractViolations"] == {}
    assert s["preemptions"].get("pinned-job", 0) > 0  # priorities make preemption happen in a replay
    assert s["rofr"]["declineAndLapseReasons"] and len(s["jobsPerCloud"]) > 1
    assert s["inputs"]["scenario"][0]["event"] == "azure down"  # combined with any trace (its effect: test_simulator)
    assert Ledger(tmp_path / "openb.db", readonly=True).verify(public_key=s["ledger"]["publicKey"]).ok
    api = tmp_path / "api"
    spot = ["--capacity-trace", str(TRACES / "spot-availability"), "--capacity-cloud", "azure", "--spot-share", "0.5"]
    code, _, err = simulate(["--trace", str(TRACES / "azure-llm-inference-2023"), "--format", "azure-llm", "--load", "20", "--out", str(api), "--no-plots", *spot], capsys)
    assert code == 0, err
    a = json.loads((api / "summary.json").read_text())
    assert set(a["jobsPerCloud"]) == {"azure"} and a["contractViolations"] == {}  # API demand never leaves Azure
    rules = [r["rule"] for r in a["inputs"]["rules"]]
    assert any(r.startswith("us-east-1a, us-east-1c, us-east-1d, us-east-1f, us-east-2a, us-east-2b -> azure/eastus/H100") for r in rules)
    assert any(r.startswith("us-west-2a, us-west-2b, us-west-2c -> azure/westus3/H100 (same area (us-west); spot share 50%)") for r in rules)
    assert a["span"] == "1.0 hours" and not a["apiStranded"]  # an hour-long trace, not "0.0 simulated days"


def test_help_lists_every_what_if_knob(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = simulate(["--help"], capsys)
    assert code == 0 and "Traceback" not in err
    for flag in ("--policy", "--load", "--class-map", "--gpu-map", "--replica", "--class-priorities", "--capacity-map", "--scale-capacity", "--scenario",
                 "--horizon", "--unserved-rate", "--ledger", "--costs"):
        assert flag in out


def test_bad_input_leaves_a_previous_runs_outputs_as_they_were(inputs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = simulate([*base(inputs), "--no-plots"], capsys)
    assert code == 0, err
    o = Path(inputs["out"])
    before = {p.name: p.read_bytes() for p in o.iterdir()}
    code, _out, err = simulate([*base(inputs), "--no-plots", "--class-map", "web=api-serving"], capsys)
    assert code == 2 and err.startswith("error: --class-map: web=api-serving: no row of t.csv has c 'web'")
    assert {p.name: p.read_bytes() for p in o.iterdir()} == before


# ------------------------------------------------------------------ v3


def test_a_duplicate_job_name_stops_the_run_in_one_line(inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dup = tmp_path / "dup.csv"
    dup.write_text("name,arrival,gpus,duration\na,0,8,60\nb,1,8,60\na,2,8,60\n")
    code, _out, err = simulate(["--trace", str(dup), "--format", "csv", "--clouds", inputs["clouds"], "--out", inputs["out"]], capsys)
    assert code == 2 and err.strip() == f"error: {dup}: duplicate job name 'a' on lines 2 and 4 (job names must be unique)"
    assert not Path(inputs["out"]).exists()


def test_the_report_shows_skipped_rows_refusals_and_the_mapping_used(inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "mixed.csv"
    trace.write_text("arrival,gpus,duration,qos\n0,8,600,LS\n5,x,600,BE\n9,64,600,LS\n12,4,600,BE\n")
    code, _out, err = simulate(["--trace", str(trace), "--format", "csv", "--clouds", inputs["clouds"], "--out", inputs["out"],
                               "--no-plots", "--skip-bad-rows"], capsys)
    assert code == 0, err  # a job the engine refuses at admission is counted, not an abort
    report = (Path(inputs["out"]) / "report.md").read_text()
    assert "**1 of 4 trace rows skipped**: bad gpus 1. First:" in report and "- `mixed.csv:3: gpus: not a number: 'x'`" in report
    assert "**1 jobs refused at admission**" in report and "`row-4: " in report
    assert "CSV fields: arrival=arrival:s (by name), gpus=gpus (by name), duration=duration:s (by name), class=qos (by name)" in report
    assert "warning: 1 jobs refused at admission under contract" in err


def test_an_interrupted_run_leaves_the_previous_results_intact(inputs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.sim.run import WhatIf, execute, prepare
    from scheduler.sim.traces import ReadOptions

    code, _out, err = simulate([*base(inputs), "--no-plots"], capsys)
    assert code == 0, err
    o = Path(inputs["out"])
    before = {p.name: p.read_bytes() for p in o.iterdir()}
    request = WhatIf(trace=Path(inputs["trace"]), fmt="csv", out=o, clouds=Path(inputs["clouds"]), plots=False,
                     read=ReadOptions(columns=inputs["columns"]), ledger=o / "ledger.db", policy="contract,cheapest")

    def ctrl_c(_n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(prepare(request), progress=ctrl_c)
    assert {p.name: p.read_bytes() for p in o.iterdir()} == before
    assert sorted(p.name for p in o.parent.iterdir()) == ["clouds.yaml", "out", "t.csv"]  # no temporary folder left behind


def test_capacity_and_scenario_apply_up_to_the_horizon(inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.sim.run import WhatIf, prepare
    from scheduler.sim.traces import ReadOptions

    spot = tmp_path / "spot"
    spot.mkdir()
    (spot / "us-east-1a_v100_1.json").write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": [1, 0]}))
    scenario = tmp_path / "late.yaml"
    scenario.write_text("apiVersion: mcsched.io/v1\nkind: Scenario\nmetadata: {name: late}\nspec:\n  events:\n"
                        "    - {at: 9000, backend: azure, up: false}\n    - {at: 30000, backend: azure, up: true}\n")
    request = WhatIf(trace=Path(inputs["trace"]), fmt="csv", out=tmp_path / "o", clouds=Path(inputs["clouds"]), plots=False,
                     read=ReadOptions(columns=inputs["columns"]), capacity_trace=spot, capacity_cloud="azure", horizon=20_000, scenario=scenario)
    p = prepare(request)
    assert p.horizon == 20_000 and max(t for t, _, _ in p.capacity_changes) == 19_800  # every 600 s up to the horizon, not to ~4,300 s
    rules = {r.rule: r.effect for r in p.rules}
    assert rules["horizon 5.6 hours (--horizon)"] == "the default would be 1.2 hours (last arrival + longest job)"
    assert rules["scenario late (late.yaml), times in simulated seconds from the trace's start"].endswith("(1 after the horizon: not applied)")
    code, _out, err = simulate([*base(inputs), "--no-plots", "--horizon", "-5"], capsys)
    assert code == 2 and "--horizon: must be a number of seconds > 0" in err
