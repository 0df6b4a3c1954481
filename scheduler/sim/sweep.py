"""``mcsched sweep``: vary one or two knobs over several seeds, in parallel processes.

A replay is deterministic, so the spread comes from the workload: each seed replays a
bootstrap resample of the trace's jobs (as many jobs, drawn with replacement, each keeping
its own arrival, duration and shape; names made unique). Seed 0 is the trace as recorded.
The bands on the plots are 95% confidence intervals of the mean over the seeds (Student's t).

Knobs (``--vary KNOB=v1,v2,...``, once or twice):

- ``holder-share``: the holder's capacity as a factor of the catalog's (``--scale-capacity holder=F``);
- ``rofr-window``: the contract's response window in seconds;
- ``load``: the offered load factor (arrivals compressed);
- ``committed``: GPUs the holder commits to (its rate and term from the ``--costs`` file's
  commitment on the holder, which must be there);
- ``reserve``: the share of each holder pool kept for api-serving (``holderRules.reserveForApiServingFraction``);
- ``decline-rate``: the share of the offers it has room for that the holder declines at discretion
  (``--holder-decline-rate``); each seed draws its own declines (the seed is the draws' seed too).

Every run is a ``Simulation`` summarised by ``summarise`` (the same figures as ``mcsched
simulate``); one row per run goes to ``sweep.csv``.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scheduler.errors import TraceError
from scheduler.sim import capacity as cap
from scheduler.sim.costs import Commitment, CostModel, committed_gpus
from scheduler.sim.policies import with_holder_declines
from scheduler.sim.run import Prepared, default_horizon_of
from scheduler.sim.simulator import Simulation
from scheduler.sim.summary import summarise
from scheduler.sim.traces import ReadStats, Trace, TraceJob

KNOBS = ("holder-share", "rofr-window", "load", "committed", "reserve", "decline-rate")
#: (column, what it is); the figures a planner compares across the sweep
METRICS = (
    ("api_p99_first_wait_h", "api-serving p99 first wait (h; censored as lower bounds)"),
    ("training_p95_first_wait_h", "training p95 first wait (h)"),
    ("cost_usd", "cost (USD)"),
    ("cost_with_unserved_usd", "cost + unserved work valued (USD)"),
    ("idle_committed_usd", "idle committed cost (USD)"),
    ("jobs_not_started", "jobs not started by the horizon"),
    ("holder_share", "holder share of GPU-hours held"),
    ("contract_violations", "contract violations"),
)
# Student's t, two-sided 95%, by degrees of freedom (beyond 30: the normal 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass(frozen=True)
class Knob:
    name: str
    values: tuple[float, ...]


def parse_vary(specs: list[str]) -> list[Knob]:
    """``--vary holder-share=0.5,1,2`` (once or twice)."""
    if not 1 <= len(specs) <= 2:
        raise TraceError("--vary: give one or two knobs (e.g. --vary committed=0,16,32 --vary load=1,2)")
    knobs = []
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip()
        if not sep or name not in KNOBS:
            raise TraceError(f"--vary: bad knob {spec!r} (expected KNOB=v1,v2,... with KNOB one of {', '.join(KNOBS)})")
        parts = [v.strip() for v in raw.split(",")]
        if "" in parts and raw.strip():
            raise TraceError(f"--vary: {spec}: an empty value between commas")
        try:
            values = tuple(float(v) for v in parts if v)
        except ValueError:
            raise TraceError(f"--vary: {spec}: values must be numbers") from None
        if not values or any(not math.isfinite(v) or v < 0 for v in values):
            raise TraceError(f"--vary: {spec}: give one or more numbers >= 0")
        if name in ("load", "rofr-window") and any(v <= 0 for v in values):
            raise TraceError(f"--vary: {spec}: {name} must be > 0")
        if name == "reserve" and any(v >= 1 for v in values):
            raise TraceError(f"--vary: {spec}: reserve is a share below 1")
        if name == "decline-rate" and any(v > 1 for v in values):
            raise TraceError(f"--vary: {spec}: decline-rate is a share from 0 to 1")
        if name == "committed" and any(v != int(v) for v in values if math.isfinite(v)):
            raise TraceError(f"--vary: {spec}: committed is a number of GPUs (whole numbers, as in a --costs file)")
        knobs.append(Knob(name, values))
    if len(knobs) == 2 and knobs[0].name == knobs[1].name:
        raise TraceError(f"--vary: {knobs[0].name} given twice")
    return knobs


def check_knobs(p: Prepared, knobs: list[Knob]) -> None:
    """Refuse what a run would fail on, before any process starts."""
    holder = p.contract.holder
    if any(k.name == "committed" for k in knobs):
        commits = p.costs.clouds[holder].committed if p.costs is not None and holder in p.costs.clouds else {}
        if not commits:
            raise TraceError(f"--vary committed: needs --costs with a commitment on the holder ({holder}) to take its rate and term from")
        have = sum(n for b in p.catalog.spec.backends if b.name == holder for r in b.regions for t, n in r.gpus.items() if t in commits)
        top = max(v for k in knobs if k.name == "committed" for v in k.values)
        if top > have:
            raise TraceError(f"--vary committed: {top:g} GPUs, but {holder} has {have:,} of the committed type")


def resample(jobs: list[TraceJob], seed: int) -> list[TraceJob]:
    """Seed 0: the trace; others: a bootstrap resample (as many jobs, with replacement, names made unique)."""
    if seed == 0:
        return jobs
    rng = random.Random(seed)
    n = len(jobs)
    drawn = [replace(jobs[rng.randrange(n)], name=f"{k}") for k in range(n)]
    drawn.sort(key=lambda j: j.arrival)
    return drawn


def _apply(p: Prepared, values: dict[str, float], seed: int = 0) -> tuple[Any, Any, list[TraceJob], CostModel | None]:
    """The catalog, contract, jobs and cost model of one point of the sweep (``seed``: its holder's decline draws)."""
    catalog, contract, jobs, costs = p.catalog, p.contract, p.trace.jobs, p.costs
    holder = contract.holder
    backend = catalog.backend(holder)
    if backend is not None and backend.holderRules.declineFraction > 0:  # --holder-decline-rate: each seed draws its own
        catalog = with_holder_declines(catalog, holder, backend.holderRules.declineFraction, seed)
    for name, v in values.items():
        if name == "holder-share":
            catalog, _ = cap.scale_catalog(catalog, {(holder, None, None): v})
        elif name == "rofr-window":
            rofr = contract.spec.rofr.model_copy(update={"windowSeconds": v})
            contract = contract.model_copy(update={"spec": contract.spec.model_copy(update={"rofr": rofr})})
        elif name == "load":
            jobs = [replace(j, arrival=j.arrival / v) for j in jobs]
        elif name == "reserve":
            backends = [
                b.model_copy(update={"holderRules": b.holderRules.model_copy(update={"reserveForApiServingFraction": v})}) if b.name == holder else b
                for b in catalog.spec.backends
            ]
            catalog = catalog.model_copy(update={"spec": catalog.spec.model_copy(update={"backends": backends})})
        elif name == "decline-rate":
            catalog = with_holder_declines(catalog, holder, v, seed)
        elif name == "committed":
            assert costs is not None
            cloud = costs.clouds[holder]
            first = next(iter(cloud.committed))
            commits = {first: Commitment(gpus=int(v), usdPerGpuHour=cloud.committed[first].usdPerGpuHour, termDays=cloud.committed[first].termDays)}
            clouds = {**costs.clouds, holder: cloud.model_copy(update={"committed": commits})}
            costs = costs.model_copy(update={"clouds": clouds})
    return catalog, contract, jobs, costs


_BASE: Prepared | None = None


def _init(base: Prepared) -> None:
    global _BASE
    _BASE = base


def run_point(values: dict[str, float], seed: int, policy: str = "contract") -> dict[str, Any]:
    """One replay of the sweep (in a worker process): its knob values, seed and figures."""
    p = _BASE
    assert p is not None, "run_point runs in a worker started with _init"
    started = time.perf_counter()
    catalog, contract, jobs, costs = _apply(p, values, seed)
    jobs = resample(jobs, seed)
    sim = Simulation(catalog, contract, policy, class_priorities=p.priorities, committed=committed_gpus(costs))
    sim.add_jobs(jobs)
    sim.add_capacity(p.capacity_changes)
    sim.add_scenario(p.actions)
    horizon = default_horizon_of(Trace(jobs, ReadStats())) if p.request.horizon is None else p.horizon
    sim.run(samples=10, horizon=horizon)
    s = summarise(sim, p.gpu_types, p.request.unserved_rate, costs)
    waits = s["waitSeconds"]
    api = waits.get("api-serving", {}).get("first", {})
    train = waits.get("training", {}).get("first", {})
    return {
        **values,
        "seed": seed,
        "api_p99_first_wait_h": api.get("p99", 0.0) / 3600,
        "api_p99_is_lower_bound": "p99" in api.get("atLeast", ()),
        "training_p95_first_wait_h": train.get("p95", 0.0) / 3600,
        "cost_usd": s["costUsdTotal"],
        "cost_with_unserved_usd": s["costUsdWithUnserved"],
        "idle_committed_usd": s["costs"]["idleCommittedUsd"],
        "jobs_not_started": sum(s["neverStarted"].values()),
        "holder_share": s["holderShareOfGpuHours"],
        "contract_violations": sum((s["contractViolations"] or {}).values()),
        "wall_seconds": time.perf_counter() - started,
    }


def sweep(p: Prepared, knobs: list[Knob], seeds: int, workers: int, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Every (knob values, seed) replay, in ``workers`` processes; rows in grid order."""
    points = [dict(zip([k.name for k in knobs], combo, strict=True)) for combo in itertools.product(*(k.values for k in knobs))]
    tasks = [(pt, seed) for pt in points for seed in range(seeds)]
    if workers <= 1:
        _init(p)
        rows = []
        for pt, seed in tasks:
            rows.append(run_point(pt, seed))
            if progress is not None:
                progress(1)
        return rows
    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(p,)) as pool:
        futures = [pool.submit(run_point, pt, seed) for pt, seed in tasks]
        rows = []
        for f in futures:
            rows.append(f.result())
            if progress is not None:
                progress(1)
        return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def bands(rows: list[dict[str, Any]], knobs: list[Knob], metric: str) -> dict[float | None, list[tuple[float, float, float, float]]]:
    """Per value of the second knob (``None`` without one): (x, mean, low, high) along the first knob."""
    groups: dict[tuple[float, float | None], list[float]] = defaultdict(list)
    for r in rows:
        groups[(r[knobs[0].name], r[knobs[1].name] if len(knobs) > 1 else None)].append(float(r[metric]))
    out: dict[float | None, list[tuple[float, float, float, float]]] = defaultdict(list)
    for (x, z), ys in sorted(groups.items(), key=lambda kv: (kv[0][1] or 0.0, kv[0][0])):
        mean = statistics.fmean(ys)
        half = 0.0
        if len(ys) > 1:
            t = _T975[len(ys) - 2] if len(ys) - 1 <= len(_T975) else 1.96
            half = t * statistics.stdev(ys) / math.sqrt(len(ys))
        out[z].append((x, mean, mean - half, mean + half))
    return dict(out)


def plot(rows: list[dict[str, Any]], knobs: list[Knob], title: str, out: Path) -> str:
    """One panel per metric: the mean over seeds along the first knob with its 95% band, one line per second-knob value."""
    from scheduler.sim.report import pyplot

    plt = pyplot()
    cols = 4
    n = len(METRICS)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.4 * ((n + cols - 1) // cols)), dpi=100, squeeze=False)
    for ax, (metric, label) in zip((a for row in axes for a in row), METRICS, strict=False):
        for z, pts in bands(rows, knobs, metric).items():
            xs = [p[0] for p in pts]
            line = ax.plot(xs, [p[1] for p in pts], marker="o", linewidth=1.4, label=f"{knobs[1].name}={z:g}" if z is not None else None)
            ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], color=line[0].get_color(), alpha=0.2, linewidth=0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(knobs[0].name)
        ax.grid(alpha=0.3)
        if len(knobs) > 1:
            ax.legend(fontsize=7)
    for ax in [a for row in axes for a in row][n:]:
        ax.set_visible(False)
    seeds = len({r["seed"] for r in rows})
    fig.suptitle(f"{title}: mean over {seeds} seed(s), 95% confidence band")
    fig.savefig(out / "sweep.png")
    plt.close(fig)
    return "sweep.png"


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def report(rows: list[dict[str, Any]], knobs: list[Knob], title: str, chart: str, wall: float, workers: int) -> list[str]:
    """report.md: what was varied, how, and the mean (95% band) of each figure per point."""
    seeds = len({r["seed"] for r in rows})
    lines = [f"# Sweep: {' x '.join(f'{k.name} ({len(k.values)} values)' for k in knobs)} x {seeds} seed(s) ({title})", "",
             f"{len(rows)} replays in {wall:.1f} s wall on {workers} process(es). Seed 0 replays the trace as recorded; every other seed "
             "a bootstrap resample of its jobs (as many, drawn with replacement). Each figure is the mean over the seeds with its 95% "
             "confidence interval (Student's t). Every run stops at the horizon; waits not ended by it count as lower bounds.", ""]
    names = [k.name for k in knobs]
    head = [*names, *(label for _, label in METRICS)]
    table = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    per_metric = {m: bands(rows, knobs, m) for m, _ in METRICS}
    first = per_metric[METRICS[0][0]]
    for z, pts in first.items():
        for i, (x, _m, _lo, _hi) in enumerate(pts):
            cells = [f"{x:g}", *([f"{z:g}"] if z is not None else [])]
            for m, _ in METRICS:
                _, mean, lo, hi = per_metric[m][z][i]
                cells.append(f"{mean:,.2f} ({lo:,.2f}..{hi:,.2f})" if hi > lo else f"{mean:,.2f}")
            table.append("| " + " | ".join(cells) + " |")
    lines += [*table, "", *([f"![{chart}]({chart})", ""] if chart else []), "Every replay's figures are in [sweep.csv](sweep.csv).", ""]
    return lines
