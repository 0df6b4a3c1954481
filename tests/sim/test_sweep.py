"""``mcsched sweep``: knobs x seeds in parallel processes, one CSV, means with 95% bands."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest

from scheduler.errors import TraceError
from scheduler.sim.sweep import Knob, bands, parse_vary, resample
from scheduler.sim.traces import TraceJob
from tests.sim.test_run import PNG, inputs, simulate  # noqa: F401  (the fixture)


def sweep(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from scheduler.cli import main

    try:
        main(["sweep", *argv])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_a_sweep_writes_one_row_per_run_and_seed_zero_is_the_trace(inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    costs = tmp_path / "costs.yaml"
    costs.write_text("clouds: {azure: {committed: {H100: {gpus: 4, usdPerGpuHour: 2.0}}}}\n")
    out = tmp_path / "sweep"
    base = ["--trace", inputs["trace"], "--format", "csv", "--columns", inputs["columns"], "--clouds", inputs["clouds"], "--costs", str(costs)]
    code, stdout, err = sweep([*base, "--vary", "holder-share=0.5,1", "--vary", "committed=0,8", "--seeds", "2", "--workers", "2", "--out", str(out)], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 2 * 2 * 2 and {r["seed"] for r in rows} == {"0", "1"}
    assert {(r["holder-share"], r["committed"]) for r in rows} == {("0.5", "0.0"), ("0.5", "8.0"), ("1.0", "0.0"), ("1.0", "8.0")}
    assert (out / "sweep.png").read_bytes()[:8] == PNG and "8 replays" in stdout
    # seed 0 at the catalog's capacity: the schedule `mcsched simulate` reports for the same inputs (commitments change the bill only)
    code, _, err = simulate([*base, "--out", str(tmp_path / "one"), "--no-plots"], capsys)
    assert code == 0, err
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    same = next(r for r in rows if (r["holder-share"], r["committed"], r["seed"]) == ("1.0", "0.0", "0"))
    assert float(same["jobs_not_started"]) == sum(one["neverStarted"].values())
    assert float(same["holder_share"]) == pytest.approx(one["holderShareOfGpuHours"])
    report = (out / "report.md").read_text()
    assert report.startswith("# Sweep: holder-share (2 values) x committed (2 values) x 2 seed(s)")


def test_bands_are_the_mean_and_a_95_percent_t_interval() -> None:
    rows = [{"k": 1.0, "seed": s, "m": v} for s, v in enumerate((1.0, 2.0, 6.0))]
    ((x, mean, lo, hi),) = bands(rows, [Knob("k", (1.0,))], "m")[None]
    half = 4.303 * statistics.stdev([1.0, 2.0, 6.0]) / math.sqrt(3)  # t(0.975, 2 df)
    assert (x, mean) == (1.0, 3.0) and (lo, hi) == pytest.approx((3.0 - half, 3.0 + half))


def test_resampling_keeps_the_size_and_makes_names_unique() -> None:
    jobs = [TraceJob(f"j{i}", float(i), 1, 60.0, "training") for i in range(50)]
    assert resample(jobs, 0) is jobs
    drawn = resample(jobs, 3)
    assert len(drawn) == 50 and len({j.name for j in drawn}) == 50 and drawn == sorted(drawn, key=lambda j: j.arrival)
    assert resample(jobs, 3) == drawn != resample(jobs, 4)


@pytest.mark.parametrize(
    ("vary", "expect"),
    [
        (["colour=1,2"], "--vary: bad knob 'colour=1,2'"),
        (["load=0,1"], "--vary: load=0,1: load must be > 0"),
        (["reserve=0.5,1"], "reserve is a share below 1"),
        (["load=1", "load=2"], "--vary: load given twice"),
        (["load=1", "reserve=0.1", "rofr-window=30"], "--vary: give one or two knobs"),
        (["load=x"], "values must be numbers"),
        (["load=1,,2"], "--vary: load=1,,2: an empty value between commas"),  # was dropped silently
        (["committed=1.5,2"], "--vary: committed=1.5,2: committed is a number of GPUs"),  # a --costs file refuses 1.5 too
    ],
)
def test_a_bad_knob_is_one_line(vary: list[str], expect: str) -> None:
    with pytest.raises(TraceError, match=expect):
        parse_vary(vary)


def test_varying_commitments_needs_a_cost_file(inputs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, _, err = sweep(["--trace", inputs["trace"], "--format", "csv", "--columns", inputs["columns"], "--clouds", inputs["clouds"],
                          "--vary", "committed=0,8", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and err.strip() == "error: --vary committed: needs --costs with a commitment on the holder (azure) to take its rate and term from"
    assert not (tmp_path / "s").exists()
