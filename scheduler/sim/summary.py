"""The figures a capacity planner reads, computed once from one finished ``Simulation``.

Definitions (the report repeats them):

- *horizon*: the run stops there (``--horizon``; default last arrival + longest job);
  capacity traces and scenario events apply up to it, nothing after it.
- *served* GPU-hours: work done by the horizon (GPUs x seconds after start-up); *in
  progress*: work still to do by jobs running at the horizon; *unserved* = requested -
  served - in progress: jobs refused at admission, never started by the horizon, cut short
  at the end of their demand. Unserved work is valued at a rate (``--unserved-rate``;
  default the holder's on-demand price), so leaving work undone never looks cheap.
- *cost*: accrued while GPUs are held (from placement, start-up included), up to the
  horizon; the cost per served GPU-hour divides it by served work only.
- *waits*: first waits (submission to start) and waits after an eviction, apart; answer
  latency and start-up included. A job not started by the horizon has a censored wait
  (>= horizon - since): it counts in the percentiles as a lower bound, and a percentile it
  may have moved is printed ``>= x``.
- *utilisation*: GPUs held / capacity per cloud and GPU type over the horizon and over the
  steady window (first to last arrival: no drain tail), GPU types the trace asks for only;
  with its exact peak and the hours it was near full (>= 95% held).
- *contract violations*: the checker's contract rules only (``CONTRACT_RULES``); its
  bookkeeping findings are reported apart (``checkerNotes``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from scheduler.sim.costs import CostModel, Usage, bill
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


def fmt_wait(w: dict[str, Any], q: str) -> str:
    """A wait percentile, ``>= x`` when censored waits make it a lower bound."""
    if not w.get("count"):
        return "-"
    return ("≥ " if q in w.get("atLeast", ()) else "") + fmt_seconds(w.get(q, 0.0))


def _cap_integral(history: list[tuple[float, int]], a: float, b: float) -> float:
    """Integral of a step function of capacity over [a, b]."""
    total = 0.0
    for k, (t, cap) in enumerate(history):
        t_next = history[k + 1][0] if k + 1 < len(history) else math.inf
        lo, hi = max(t, a), min(t_next, b)
        if hi > lo:
            total += cap * (hi - lo)
    return total


#: the checker's rules that are the contract's (ROFR, pins, preemption); the others are its
#: bookkeeping of the event stream (a job it lost track of, a release of a job not running):
#: reported apart, never counted as contract violations
CONTRACT_RULES = frozenset({
    "offer-missing", "offer-terms", "answer-not-holder", "rofr-skipped", "holder-answer", "rofr-order",
    "pinned-class-off-pins", "preemption",
})


def wait_figures(done: list[float], censored: list[float]) -> dict[str, Any]:
    """Nearest-rank percentiles over every wait, censored ones included as lower bounds.

    A censored wait (the job had not started by the horizon) is at least its length so far.
    A percentile is exact unless some censored wait is at or below it: then it is only a lower
    bound, flagged in ``atLeast`` (the report prints ">= x"), never reported as a shorter wait.
    """
    every = sorted(done + censored)
    low = min(censored, default=math.inf)
    out: dict[str, Any] = {"count": len(every), "started": len(done), "censored": len(censored)}
    at_least = []
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        v = ranked(every, q)
        out[name] = v
        if every and low <= v:
            at_least.append(name)
    out["max"] = every[-1] if every else 0.0
    if censored:
        at_least.append("max")
    out["atLeast"] = at_least
    return out


def _waits(sim: Simulation) -> dict[str, Any]:
    rec = sim.rec
    out: dict[str, Any] = {}
    for cls in JOB_CLASSES:
        first, again = rec.waits.get(cls, []), rec.waits_after_eviction.get(cls, [])
        cens, cens_again = rec.censored.get(cls, []), rec.censored_after_eviction.get(cls, [])
        if not (first or again or cens or cens_again):
            continue
        out[cls] = {
            "first": wait_figures(first, cens),
            "afterEviction": wait_figures(again, cens_again),
            "censored": {"count": len(cens) + len(cens_again), "p50": percentile(cens + cens_again, 0.5), "max": max(cens + cens_again, default=0.0)},
        }
    return out


def _held_until(st: list[float], t: float) -> float:
    return st[3] + st[0] * (t - st[2])


def unserved_rates(sim: Simulation, flat: float | None) -> dict[str, float]:
    """USD per unserved GPU-hour by GPU type: ``flat`` if set, else the holder's on-demand price (else the dearest cloud's)."""
    types = set(sim.rec.requested_by_type)
    if flat is not None:
        return dict.fromkeys(types, flat)
    holder = sim.catalog.backend(sim.holder)
    out = {}
    for t in types:
        price = holder.prices.get(t) if holder is not None else None
        if price is None:
            price = max((b.prices.get(t, 0.0) for b in sim.catalog.spec.backends), default=0.0)
        out[t] = float(price)
    return out


def usage(sim: Simulation) -> dict[tuple[str, str], Usage]:
    """Per (cloud, GPU type) over the run: GPU-seconds held, held above the commitment, and spent starting up."""
    rec, end = sim.rec, sim.end
    held: dict[tuple[str, str], float] = defaultdict(float)
    for (cloud, _region, gpu_type), st in rec.pool_state.items():
        held[(cloud, gpu_type)] += _held_until(st, end)
    startup = {b.name: b.startupSeconds for b in sim.catalog.spec.backends}
    out = {}
    for key, agg in rec.type_state.items():
        above = agg[8] + max(agg[0] - agg[7], 0) * (end - agg[2])
        out[key] = Usage(held[key], above, rec.placed_gpus.get(key, 0) * startup.get(key[0], 0.0))
    return out


def summarise(sim: Simulation, gpu_types: set[str], unserved_rate: float | None = None, costs: CostModel | None = None) -> dict[str, Any]:
    """Everything summary.json holds for one policy (``gpu_types``: what the trace asks for).

    ``unserved_rate``: USD per unserved GPU-hour (default: the holder's on-demand price of its
    GPU type), so a policy that leaves work undone is not the cheapest by omission.
    ``costs``: committed, on-demand and spot rates (``scheduler.sim.costs``); default the
    catalog's on-demand prices. The simulation must have been built with the same commitments.
    """
    rec = sim.rec
    end = sim.end
    busy_start = rec.first_alloc if rec.first_alloc is not None else 0.0
    busy_end = max(rec.last_free, busy_start)
    busy = busy_end - busy_start
    steady = rec.steady or (min((j.arrival for j in sim.arrivals), default=0.0), end)
    # utilisation per (cloud, gpu type) over the horizon and the steady window, requested types only
    alloc_s: dict[tuple[str, str], float] = defaultdict(float)
    steady_s: dict[tuple[str, str], float] = defaultdict(float)
    cap_s: dict[tuple[str, str], float] = defaultdict(float)
    cap_steady: dict[tuple[str, str], float] = defaultdict(float)
    held_by_cloud: dict[str, float] = defaultdict(float)
    for key, st in rec.pool_state.items():
        cloud, _region, gpu_type = key
        held = _held_until(st, end)
        held_by_cloud[cloud] += held
        if gpu_type in gpu_types:
            alloc_s[(cloud, gpu_type)] += held
            steady_s[(cloud, gpu_type)] += rec.steady_held.get(key, held)
            cap_s[(cloud, gpu_type)] += _cap_integral(rec.cap_history[key], 0.0, end)
            cap_steady[(cloud, gpu_type)] += _cap_integral(rec.cap_history[key], steady[0], steady[1])
    utilisation: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (cloud, gpu_type), cap in sorted(cap_s.items()):
        held_now, cap_now, since, near_full, peak = rec.type_state[(cloud, gpu_type)][:5]
        if cap_now > 0 and held_now >= NEAR_FULL * cap_now:
            near_full += end - since
        cs = cap_steady[(cloud, gpu_type)]
        utilisation[cloud][gpu_type] = {
            "horizon": alloc_s[(cloud, gpu_type)] / cap if cap else 0.0,
            "steady": steady_s[(cloud, gpu_type)] / cs if cs else 0.0,
            "peak": peak,
            "hoursNearFull": near_full / 3600,
            "gpuHoursHeld": alloc_s[(cloud, gpu_type)] / 3600,
        }
    total_held = sum(held_by_cloud.values())
    requested = {c: rec.requested[c] / 3600 for c in JOB_CLASSES if rec.requested[c]}
    served = {c: rec.served[c] / 3600 for c in requested}
    in_progress = {c: rec.in_progress[c] / 3600 for c in requested}
    unserved = {c: max(requested[c] - served[c] - in_progress[c], 0.0) for c in requested}
    rates = unserved_rates(sim, unserved_rate)
    unserved_by_type = {
        t: max(rec.requested_by_type[t] - rec.served_by_type.get(t, 0.0) - rec.in_progress_by_type.get(t, 0.0), 0.0) / 3600
        for t in rec.requested_by_type
    }
    unserved_value = sum(h * rates[t] for t, h in unserved_by_type.items())
    billed = bill(costs, sim.catalog, usage(sim), end)
    cost_total = billed["totalUsd"]
    served_total = sum(served.values())
    api_unserved = unserved.get("api-serving", 0.0)
    api_requested = requested.get("api-serving", 0.0)
    never = {c: rec.never_placed[c] + sim.unplaceable[c] for c in JOB_CLASSES if rec.never_placed[c] + sim.unplaceable[c]}
    violations = _count(v.rule for v in rec.checker.violations) if rec.check else {}
    return {
        "policy": sim.policy,
        "simulatedSeconds": end,
        "span": fmt_span(end),
        "horizon": {"seconds": end, "label": fmt_span(end), "fixed": sim.stop != math.inf, "arrivalsAfter": sim.after_horizon},
        "steadyWindow": {"start": steady[0], "end": steady[1], "label": fmt_span(steady[1] - steady[0])},
        "busySpan": {"start": busy_start, "end": busy_end, "seconds": busy, "label": fmt_span(busy)},
        "jobs": len(sim.arrivals),
        "classPriorities": dict(sim.priorities),
        "neverPlaced": never,
        "neverStarted": {c: n for c, n in sorted(rec.never_started.items()) if n},
        "runningAtHorizon": {c: n for c, n in sorted(rec.running_at_end.items()) if n},
        "unplaceable": dict(sim.unplaceable),
        "refusedAtAdmission": {"count": sum(sim.unplaceable.values()), "first": list(sim.refusals)},
        "stillQueued": {c: n for c, n in rec.queued_jobs.items() if n},
        "gpuHours": {
            "requested": requested,
            "served": served,
            "inProgressAtHorizon": {c: v for c, v in in_progress.items() if v},
            "unserved": unserved,
            "heldPerCloud": {c: v / 3600 for c, v in sorted(held_by_cloud.items()) if v},
        },
        "unservedUsdPerGpuHour": rates,
        "unservedRateFrom": "--unserved-rate" if unserved_rate is not None else f"the holder's ({sim.holder}) on-demand price per GPU type",
        "unservedValueUsd": unserved_value,
        "costUsdWithUnserved": cost_total + unserved_value,
        "apiStranded": bool(rec.censored.get("api-serving") or rec.censored_after_eviction.get("api-serving")) or sim.unplaceable["api-serving"] > 0,
        "apiNeverStarted": len(rec.censored.get("api-serving", [])) + len(rec.censored_after_eviction.get("api-serving", [])) + sim.unplaceable["api-serving"],
        "apiUnservedShare": api_unserved / api_requested if api_requested else 0.0,
        "costUsdPerCloud": {c: v["totalUsd"] for c, v in billed["perCloud"].items() if v["totalUsd"]},
        "costUsdTotal": cost_total,
        "costs": billed,
        "costUsdHeldAtListPrices": sum(rec.cost.values()),
        "costUsdPerServedGpuHour": cost_total / served_total if served_total else 0.0,
        "holderShareOfGpuHours": held_by_cloud.get(sim.holder, 0.0) / total_held if total_held else 0.0,
        "jobsPerCloud": dict(sorted(rec.placements.items())),
        "waitSeconds": _waits(sim),
        "utilisation": dict(utilisation),
        "preemptions": dict(rec.preemptions),
        "rofr": {"declineAndLapseReasons": {f"{a}: {r}": n for (a, r), n in sorted(rec.answers.items())}},
        "contractViolations": {k: v for k, v in sorted(violations.items()) if k in CONTRACT_RULES} if rec.check else None,
        "checkerNotes": {k: v for k, v in sorted(violations.items()) if k not in CONTRACT_RULES} if rec.check else None,
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
    w = s["waitSeconds"].get("api-serving", {}).get("first", {})
    p50, p99 = fmt_wait(w, "p50"), fmt_wait(w, "p99")
    if w.get("p99", 0.0) > API_DELAY_SECONDS:
        return (
            f"API DELAYED under {s['policy']}: api-serving waits p50 {p50}, p99 {p99} to start; every job started in the end, "
            f"{s['apiUnservedShare']:.1%} of its GPU-hours unserved{where}"
        )
    return f"API served under {s['policy']}: every api-serving job started (p99 wait {p99}), {s['apiUnservedShare']:.1%} of its GPU-hours unserved{where}"
