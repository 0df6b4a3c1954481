"""``mcsched simulate``: replay a trace through the real engine on a simulated clock."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.app import CatalogOpt, ContractOpt, app, err, load_config, out
from scheduler.ledger import Ledger


@app.command("simulate")
def simulate_cmd(
    trace: Annotated[Path, typer.Option("--trace", help="Workload trace file.")],
    fmt: Annotated[str, typer.Option("--format", help="alibaba-openb | azure-llm | csv")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory (summary.json, ledger.db, plots, report.md).")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    policy: Annotated[str, typer.Option("--policy", help="contract | cheapest (ignores the contract) | azure-only (never spills)")] = "contract",
    columns: Annotated[str | None, typer.Option("--columns", help="csv: arrival=COL,gpus=COL,duration=COL[,class=COL,gpu_type=COL,name=COL]")] = None,
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Count and skip bad rows instead of stopping.")] = False,
    capacity_trace: Annotated[Path | None, typer.Option("--capacity-trace", help="Directory of spot-availability JSON files.")] = None,
    capacity_cloud: Annotated[str, typer.Option("--capacity-cloud", help="Cloud whose pools the capacity trace drives.")] = "aws",
    speedup: Annotated[float, typer.Option("--speedup", help="Compress arrival times by this factor (more offered load).")] = 1.0,
    signing_key: Annotated[Path | None, typer.Option("--signing-key", help="Ledger signing key (default $MCSCHED_HOME/ledger-signing.key).")] = None,
) -> None:
    """Replay a trace through the real engine on a simulated clock; write a report."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scheduler.errors import TraceError
    from scheduler.sim.report import plots, write_report
    from scheduler.sim.simulator import POLICIES, Simulation
    from scheduler.sim.traces import FORMATS, ReadStats, read_spot_dir, read_trace

    if fmt not in FORMATS:
        raise TraceError(f"--format: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if policy not in POLICIES:
        raise TraceError(f"--policy: unknown policy {policy!r} (expected one of {', '.join(POLICIES)})")
    if speedup <= 0:
        raise TraceError("--speedup: must be > 0")
    catalog, the_contract = load_config(clouds, contract)
    stats = ReadStats()
    jobs = read_trace(trace, fmt, columns=columns, skip_bad_rows=skip_bad_rows, stats=stats)
    spot = read_spot_dir(capacity_trace) if capacity_trace else None
    if spot is not None and capacity_cloud not in catalog.backend_names:
        raise TraceError(f"--capacity-cloud: {capacity_cloud!r} is not in the catalog")
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / "ledger.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    ledger = Ledger(db, signing_key=signing_key)
    sim = Simulation(catalog, the_contract, policy, sinks=[ledger])
    sim.add_jobs(jobs, speedup)
    driven = sim.add_capacity_trace(spot, capacity_cloud, "H100", speedup) if spot else []
    started = time.perf_counter()
    with Progress(TextColumn("[bold]simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("jobs", total=len(jobs))
        sim.run(progress=lambda n: bar.advance(task, n), flush=ledger.flush)
    ledger.flush()
    ledger.close()
    wall = time.perf_counter() - started
    summary = sim.summary()
    summary["trace"] = {"path": str(trace), "format": fmt, **stats.to_dict(), "capacityTrace": driven}
    summary["wallSeconds"] = wall
    summary["eventsPerSecond"] = (summary["events"]["engine"] + summary["events"]["simulation"]) / wall if wall else 0.0
    images = plots(sim.samples, out_dir)
    write_report(out_dir, summary, images, str(trace), wall)
    out.print(
        f"{summary['jobs']:,} jobs, {summary['simulatedSeconds'] / 86400:.1f} simulated days in {wall:.1f}s "
        f"({summary['eventsPerSecond']:,.0f} events/s); holder share {summary['holderShareOfGpuHours']:.1%}, "
        f"cost ${summary['costUsdTotal']:,.0f}, violations {sum(summary['contractViolations'].values())}",
        markup=False,
    )
    out.print(f"wrote {out_dir}/summary.json, report.md, ledger.db, {', '.join(images)}", markup=False)


