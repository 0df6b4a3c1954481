"""The figures a capacity planner reads, computed from one finished ``Simulation``.

Definitions (the report repeats them):

- *served* GPU-hours: work done (GPUs x seconds after start-up); *unserved* = requested -
  served: jobs never placed, unplaceable, cut short at the end of their demand.
- *cost*: accrued while GPUs are held (from placement, start-up included); the cost per
  served GPU-hour divides it by served work only.
- *waits*: from submission, or from an eviction, to the start of work (answer latency and
  start-up included); censored waits are those of jobs that never started, measured to
  the end of the run (or of their demand).
- *utilisation*: GPUs held / capacity per cloud and GPU type, averaged over the busy span
  (first placement to last release) and only for the GPU types the trace asks for; with
  its exact peak and the hours it was near full (>= 95% held), which a long busy span
  (a sped-up trace whose longest pods run for months) would otherwise average away.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from scheduler.sim.simulator import NEAR_FULL, Simulation
from scheduler.specs import JOB_CLASSES


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for an empty list)."""
    return ranked(sorted(xs), q)


def ranked(s: list[float], q: float) -> float:
    """``percentile`` of a list already sorted: a million-job replay's waits are sorted once, not once per percentile."""
    if not s:
        return 0.0
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def span_unit(seconds: float) -> tuple[float, str]:
    """The unit a span reads best in: (seconds per unit, name)."""
    for threshold, size, name in ((2 * 86400.0, 86400.0, "days"), (3600.0, 3600.0, "hours"), (120.0, 60.0, "minutes")):
        if seconds >= threshold:
            return size, name
    return 1.0, "seconds"


def fmt_span(seconds: float) -> str:
    """``2.5 simulated hours`` rather than ``0.1 simulated days``."""
    size, name = span_unit(seconds)
    return f"{seconds / size:,.1f} {name}" if size > 1 else f"{seconds:,.0f} seconds"


def fmt_seconds(s: float) -> str:
    """A wait in the unit it reads best in."""
    if s < 120:
        return f"{s:,.0f} s"
    if s < 7200:
        return f"{s / 60:,.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:,.1f} h"
    return f"{s / 86400:,.1f} d"


def _cap_integral(history: list[tuple[float, int]], a: float, b: float) -> float:
    """Integral of a step function of capacity over [a, b]."""
    total = 0.0
    for k, (t, cap) in enumerate(history):
        t_next = history[k + 1][0] if k + 1 < len(history) else math.inf
        lo, hi = max(t, a), min(t_next, b)
        if hi > lo:
            total += cap * (hi - lo)
    return total


def _waits(sim: Simulation) -> dict[str, Any]:
    rec = sim.rec
    out: dict[str, Any] = {}
    for cls in JOB_CLASSES:
        first, again, cens = rec.waits.get(cls, []), rec.waits_after_eviction.get(cls, []), rec.censored.get(cls, [])
        if not (first or again or cens):
            continue
        started = first + again
        by_wait, again_by_wait = sorted(started), sorted(again)
        out[cls] = {
            "count": len(started),
            "p50": ranked(by_wait, 0.5),
            "p95": ranked(by_wait, 0.95),
            "p99": ranked(by_wait, 0.99),
            "max": max(started, default=0.0),
            "afterEviction": {"count": len(again), "p50": ranked(again_by_wait, 0.5), "p99": ranked(again_by_wait, 0.99)},
            "censored": {"count": len(cens), "p50": percentile(cens, 0.5), "max": max(cens, default=0.0)},
        }
    return out


def summarise(sim: Simulation, gpu_types: set[str]) -> dict[str, Any]:
    """Everything summary.json holds for one policy (``gpu_types``: what the trace asks for)."""
    rec = sim.rec
    end = sim.end
    busy_start = rec.first_alloc if rec.first_alloc is not None else 0.0
    busy_end = max(rec.last_free, busy_start)
    busy = busy_end - busy_start
    # utilisation per (cloud, gpu type) over the busy span, requested types only
    alloc_s: dict[tuple[str, str], float] = defaultdict(float)
    cap_s: dict[tuple[str, str], float] = defaultdict(float)
    held_by_cloud: dict[str, float] = defaultdict(float)
    for key, st in rec.pool_state.items():
        cloud, _region, gpu_type = key
        held = st[3] + st[0] * (end - st[2])
        held_by_cloud[cloud] += held
        if gpu_type in gpu_types:
            alloc_s[(cloud, gpu_type)] += held
            cap_s[(cloud, gpu_type)] += _cap_integral(rec.cap_history[key], busy_start, busy_end)
    utilisation: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (cloud, gpu_type), cap in sorted(cap_s.items()):
        held_now, cap_now, since, near_full, peak = rec.type_state[(cloud, gpu_type)][:5]
        if cap_now > 0 and held_now >= NEAR_FULL * cap_now:
            near_full += end - since
        utilisation[cloud][gpu_type] = {
            "busySpan": alloc_s[(cloud, gpu_type)] / cap if cap else 0.0,
            "peak": peak,
            "hoursNearFull": near_full / 3600,
            "gpuHoursHeld": alloc_s[(cloud, gpu_type)] / 3600,
        }
    total_held = sum(held_by_cloud.values())
    requested = {c: rec.requested[c] / 3600 for c in JOB_CLASSES if rec.requested[c]}
    served = {c: rec.served[c] / 3600 for c in requested}
    unserved = {c: max(requested[c] - served[c], 0.0) for c in requested}
    cost_total = sum(rec.cost.values())
    served_total = sum(served.values())
    api_unserved = unserved.get("api-serving", 0.0)
    api_requested = requested.get("api-serving", 0.0)
    never = {c: rec.never_placed[c] + sim.unplaceable[c] for c in JOB_CLASSES if rec.never_placed[c] + sim.unplaceable[c]}
    return {
        "policy": sim.policy,
        "simulatedSeconds": end,
        "span": fmt_span(end),
        "busySpan": {"start": busy_start, "end": busy_end, "seconds": busy, "label": fmt_span(busy)},
        "jobs": len(sim.arrivals),
        "classPriorities": dict(sim.priorities),
        "neverPlaced": never,
        "unplaceable": dict(sim.unplaceable),
        "stillQueued": {c: n for c, n in rec.queued_jobs.items() if n},
        "gpuHours": {
            "requested": requested,
            "served": served,
            "unserved": unserved,
            "heldPerCloud": {c: v / 3600 for c, v in sorted(held_by_cloud.items()) if v},
        },
        "apiStranded": bool(rec.censored.get("api-serving")) or sim.unplaceable["api-serving"] > 0,
        "apiNeverStarted": len(rec.censored.get("api-serving", [])) + sim.unplaceable["api-serving"],
        "apiUnservedShare": api_unserved / api_requested if api_requested else 0.0,
        "costUsdPerCloud": {c: v for c, v in sorted(rec.cost.items()) if v},
        "costUsdTotal": cost_total,
        "costUsdPerServedGpuHour": cost_total / served_total if served_total else 0.0,
        "holderShareOfGpuHours": held_by_cloud.get(sim.holder, 0.0) / total_held if total_held else 0.0,
        "jobsPerCloud": dict(sorted(rec.placements.items())),
        "waitSeconds": _waits(sim),
        "utilisation": dict(utilisation),
        "preemptions": dict(rec.preemptions),
        "rofr": {"declineAndLapseReasons": {f"{a}: {r}": n for (a, r), n in sorted(rec.answers.items())}},
        "contractViolations": dict(sorted(_count(v.rule for v in rec.checker.violations).items())) if rec.check else None,
        "events": {"engine": rec.events, "simulation": sim.sim_events},
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in items:
        out[x] += 1
    return dict(out)


API_DELAY_SECONDS = 3600.0  # an api-serving p99 wait above this makes the headline say DELAYED


def headline(s: dict[str, Any], title: str = "") -> str:
    """The first line of the report and of the command's output: is the API served, and how soon?"""
    where = f" ({title})" if title else ""
    req = s["gpuHours"]["requested"].get("api-serving", 0.0)
    if s["apiStranded"]:
        return (
            f"API STRANDED under {s['policy']}: {s['apiNeverStarted']:,} api-serving jobs never started or restarted; "
            f"{s['gpuHours']['unserved']['api-serving']:,.0f} of {req:,.0f} api-serving GPU-hours unserved "
            f"({s['apiUnservedShare']:.1%}){where}"
        )
    if not req:
        return f"no api-serving demand in this trace under {s['policy']}{where}"
    w = s["waitSeconds"].get("api-serving", {})
    p50, p99 = fmt_seconds(w.get("p50", 0.0)), fmt_seconds(w.get("p99", 0.0))
    if w.get("p99", 0.0) > API_DELAY_SECONDS:
        return (
            f"API DELAYED under {s['policy']}: api-serving waits p50 {p50}, p99 {p99} to start; every job started in the end, "
            f"{s['apiUnservedShare']:.1%} of its GPU-hours unserved{where}"
        )
    return f"API served under {s['policy']}: every api-serving job started (p99 wait {p99}), {s['apiUnservedShare']:.1%} of its GPU-hours unserved{where}"
