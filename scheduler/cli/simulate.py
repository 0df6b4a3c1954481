"""``mcsched simulate``: parse the what-if's options, run it (``scheduler.sim.run``), print the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.app import CatalogOpt, ContractOpt, app, err, out


@app.command("simulate")
def simulate_cmd(
    trace: Annotated[Path, typer.Option("--trace", help="Workload trace: a file (azure-llm: a file or a directory of them).")],
    fmt: Annotated[str, typer.Option("--format", help="alibaba-openb | azure-llm | csv | jsonl")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory (summary.json, report.md, plots, ledger).")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    policy: Annotated[str, typer.Option("--policy", help="contract | cheapest | azure-only, or several comma-separated for one comparison report")] = "contract",
    load: Annotated[float, typer.Option("--load", help="Offered load factor: job traces compress arrivals; azure-llm scales request volume.")] = 1.0,
    speedup: Annotated[float | None, typer.Option("--speedup", hidden=True, help="Old name of --load for job traces.")] = None,
    columns: Annotated[str | None, typer.Option("--columns", help="csv/jsonl field mapping: arrival=COL[:s|ms|epoch-s|epoch-ms|iso],gpus=COL,duration=COL[:s|ms|min|h], optionally class=, gpu_type=, name=, priority=; fields left out are picked up by common names (class, qos, job_type, priority, ...); azure-llm: arrival=COL[:unit],input=COL,output=COL")] = None,
    class_map: Annotated[str | None, typer.Option("--class-map", help="Trace label -> class, e.g. LS=inference,BE=training ('*' for the rest).")] = None,
    gpu_map: Annotated[str | None, typer.Option("--gpu-map", help="Trace GPU model -> catalog GPU type, e.g. any=H100,V100M32=H200.")] = None,
    replica: Annotated[str | None, typer.Option("--replica", help="azure-llm: prefillTokensPerSecond=,decodeTokensPerSecond=,gpusPerReplica=,gpuType=,windowSeconds=,targetUtilisation=,minReplicas=")] = None,
    class_priorities: Annotated[str | None, typer.Option("--class-priorities", help="e.g. api-serving=100,inference=50,training=0 (default; or the contract's spec.classPriorities).")] = None,
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Count and skip bad rows instead of stopping.")] = False,
    capacity_trace: Annotated[Path | None, typer.Option("--capacity-trace", help="Directory of spot-availability JSON files.")] = None,
    capacity_cloud: Annotated[str | None, typer.Option("--capacity-cloud", help="Cloud whose pools the capacity trace drives (geography-respecting default mapping).")] = None,
    capacity_map: Annotated[str | None, typer.Option("--capacity-map", help="Explicit mapping: zone=cloud/region/gpuType, comma-separated.")] = None,
    spot_share: Annotated[float, typer.Option("--spot-share", help="Share of each driven pool that follows the capacity trace (0..1).")] = 1.0,
    scale_capacity: Annotated[str | None, typer.Option("--scale-capacity", help="Scale pools: cloud=F, cloud/region=F or cloud/region/gpuType=F, comma-separated, e.g. azure=0.5.")] = None,
    scenario: Annotated[Path | None, typer.Option("--scenario", help="A kind: Scenario spec of timed backend/capacity events.")] = None,
    with_plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the PNG plots (the slowest part of a short run).")] = True,
    horizon: Annotated[float | None, typer.Option("--horizon", help="Stop the run at this many simulated seconds (default: last arrival + longest job); jobs not started by then are unserved.")] = None,
    unserved_rate: Annotated[float | None, typer.Option("--unserved-rate", help="USD per unserved GPU-hour (default: the holder's on-demand price of its GPU type).")] = None,
    costs: Annotated[Path | None, typer.Option("--costs", help="Cost model YAML: per cloud committed GPUs (term, rate, paid used or not), on-demand and spot rates, start-up billing (default: the catalog's on-demand prices).")] = None,
    ledger: Annotated[Path | None, typer.Option("--ledger", help="Write a signed ledger of every decision to FILE (default: none), signed with a throwaway key; FILE.zst: compact (zstd, ~10x smaller), read as is by mcsched audit verify/export/prove.")] = None,
    holder_decline_rate: Annotated[float, typer.Option("--holder-decline-rate", help="Share (0..1) of the offers it has room for that the ROFR holder declines at discretion (default 0: it takes every job it fits).")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the holder's declines (same seed, same declines).")] = 0,
) -> None:
    """Replay a trace through the real engine on a simulated clock; write a planner's report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scheduler.cli.gcpause import no_gc
    from scheduler.errors import TraceError
    from scheduler.sim.run import WhatIf, execute, prepare
    from scheduler.sim.traces import ReadOptions

    if speedup is not None:
        if load != 1.0:
            raise TraceError("--speedup is the old name of --load: give one of them")
        load = speedup
    read = ReadOptions(columns=columns, skip_bad_rows=skip_bad_rows, class_map=class_map, gpu_map=gpu_map, replica=replica, load=load)
    request = WhatIf(
        trace=trace, fmt=fmt, out=out_dir, clouds=clouds, contract=contract, policy=policy, read=read,
        class_priorities=class_priorities, scale_capacity=scale_capacity, scenario=scenario, plots=with_plots,
        capacity_trace=capacity_trace, capacity_cloud=capacity_cloud, capacity_map=capacity_map, spot_share=spot_share,
        horizon=horizon, unserved_rate=unserved_rate, ledger=ledger, costs=costs, holder_decline_rate=holder_decline_rate, seed=seed,
    )
    prepared = prepare(request)
    total = len(prepared.trace.jobs) * len(prepared.policies)
    with Progress(TextColumn("[bold]simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("jobs", total=total)
        # a replay keeps millions of acyclic live objects: the cyclic collector's scans of them find nothing (a third of the wall time)
        with no_gc():
            outcome = execute(prepared, progress=lambda n: bar.advance(task, n))
    for line in outcome.lines:
        out.print(line, markup=False)
    for warning in outcome.warnings:
        err.print(f"warning: {warning}", markup=False)


@app.command("sweep")
def sweep_cmd(
    trace: Annotated[Path, typer.Option("--trace", help="Workload trace (as for simulate).")],
    fmt: Annotated[str, typer.Option("--format", help="alibaba-openb | azure-llm | csv | jsonl")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory (sweep.csv, sweep.png, report.md).")],
    vary: Annotated[list[str], typer.Option("--vary", help="KNOB=v1,v2,... once or twice; knobs: holder-share, rofr-window, load, committed, reserve, decline-rate.")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Replays per point: seed 0 is the trace, the others bootstrap resamples of its jobs.")] = 5,
    workers: Annotated[int | None, typer.Option("--workers", help="Parallel processes (default: 2, or 1 on one core).")] = None,
    columns: Annotated[str | None, typer.Option("--columns", help="csv/jsonl field mapping (as for simulate).")] = None,
    class_map: Annotated[str | None, typer.Option("--class-map", help="Trace label -> class.")] = None,
    gpu_map: Annotated[str | None, typer.Option("--gpu-map", help="Trace GPU model -> catalog GPU type.")] = None,
    scale_capacity: Annotated[str | None, typer.Option("--scale-capacity", help="Scale pools before the sweep, e.g. azure=0.5.")] = None,
    costs: Annotated[Path | None, typer.Option("--costs", help="Cost model YAML (needed to vary committed).")] = None,
    horizon: Annotated[float | None, typer.Option("--horizon", help="Simulated seconds (default: each run's last arrival + longest job).")] = None,
    unserved_rate: Annotated[float | None, typer.Option("--unserved-rate", help="USD per unserved GPU-hour.")] = None,
    with_plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw sweep.png.")] = True,
    holder_decline_rate: Annotated[float, typer.Option("--holder-decline-rate", help="Share of the offers it has room for that the holder declines (unless varied); each seed draws its own declines.")] = 0.0,
) -> None:
    """Vary one or two knobs over several seeds in parallel processes; one CSV of every run, plots with 95% bands."""
    import shutil
    import tempfile
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scheduler.cli.gcpause import no_gc
    from scheduler.errors import TraceError
    from scheduler.sim import sweep as sw
    from scheduler.sim.run import WhatIf, prepare
    from scheduler.sim.traces import ReadOptions

    knobs = sw.parse_vary(vary)
    if not 1 <= seeds <= 1000:
        raise TraceError("--seeds: must be 1..1000")
    n_workers = workers if workers is not None else sw.default_workers()
    if n_workers < 1:
        raise TraceError("--workers: must be >= 1")
    read = ReadOptions(columns=columns, class_map=class_map, gpu_map=gpu_map)
    request = WhatIf(trace=trace, fmt=fmt, out=out_dir, clouds=clouds, contract=contract, read=read, scale_capacity=scale_capacity,
                     plots=with_plots, horizon=horizon, unserved_rate=unserved_rate, costs=costs, holder_decline_rate=holder_decline_rate)
    prepared = prepare(request)
    sw.check_knobs(prepared, knobs)
    total = seeds
    for k in knobs:
        total *= len(k.values)
    started = time.perf_counter()
    with Progress(TextColumn("[bold]sweeping"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("runs", total=total)
        with no_gc():  # forked workers inherit the paused collector (see simulate_cmd)
            rows = sw.sweep(prepared, knobs, seeds, n_workers, progress=lambda n: bar.advance(task, n))
    wall = time.perf_counter() - started
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        sw.write_csv(rows, tmp / "sweep.csv")
        chart = sw.plot(rows, knobs, prepared.title("contract"), tmp) if with_plots else ""
        lines = sw.report(rows, knobs, prepared.title("contract"), chart, wall, n_workers)
        (tmp / "report.md").write_text("\n".join(lines))
        out_dir.mkdir(exist_ok=True)
        for name in ("sweep.csv", "sweep.png", "report.md"):
            (out_dir / name).unlink(missing_ok=True)
            if (tmp / name).exists():
                (tmp / name).replace(out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.print(lines[0].removeprefix("# "), markup=False)
    out.print(f"{len(rows)} replays in {wall:.1f} s wall on {n_workers} process(es); wrote {out_dir}/: sweep.csv, report.md{', ' + chart if chart else ''}", markup=False)


@app.command("calibrate")
def calibrate_cmd(
    trace: Annotated[Path, typer.Option("--trace", help="openb pods (openb_pod_list_default.csv): records creation and scheduled times.")],
    nodes: Annotated[Path, typer.Option("--nodes", help="openb GPU nodes (openb_node_list_gpu_node.csv): the cluster the replay mirrors.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory (report.md, calibration.json, qq.png).")],
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Count and skip malformed pod rows instead of stopping at the first.")] = False,
) -> None:
    """Replay openb on a one-pool copy of its cluster and compare simulated with recorded waits (quantiles, Q-Q, distance)."""
    import shutil
    import tempfile

    from scheduler.sim.calibrate import calibrate, write
    from scheduler.sim.run import check_out

    check_out(out_dir)  # before the replay, not after it
    result = calibrate(trace, nodes, skip_bad_rows)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        lines = write(result, tmp, trace.name)
        out_dir.mkdir(exist_ok=True)
        for name in ("report.md", "calibration.json", "qq.png"):
            (tmp / name).replace(out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.print(lines[0].removeprefix("# "), markup=False)
    out.print(next(line for line in lines if line.startswith("Distance")).replace("**", ""), markup=False)
    out.print(f"wrote {out_dir}/: report.md, calibration.json, qq.png", markup=False)
