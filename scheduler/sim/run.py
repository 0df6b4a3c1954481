"""A what-if run end to end: validate every input, replay each policy, write the outputs.

``prepare`` reads and checks everything (trace, catalog, contract, scenario, capacity
mapping, knobs) and raises a one-line ``MCSchedError`` before anything is written;
``execute`` replays each policy through the real engine and writes summary.json,
report.md, the plots and a verifiable ledger per policy. ``mcsched simulate`` only parses
its options into a ``WhatIf`` and prints what ``execute`` returns.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.errors import TraceError
from scheduler.ledger import Ledger
from scheduler.loading import load_catalog, load_contract
from scheduler.paths import default_catalog, default_contract
from scheduler.sim import capacity as cap
from scheduler.sim.policies import POLICIES, parse_policies, spill_ranking
from scheduler.sim.report import RunView, plot_comparison, plots, write_comparison, write_report
from scheduler.sim.scenario import Action, load_scenario
from scheduler.sim.simulator import DEFAULT_CLASS_PRIORITIES, Simulation
from scheduler.sim.summary import fmt_span, headline, summarise
from scheduler.sim.traces import CLASSES, ReadOptions, Rule, Trace, parse_map, read_spot_dir, read_trace
from scheduler.specs import CloudCatalog, Contract

OUTPUT_FILES = ("summary.json", "report.md", "ledger.db", "ledger.db-wal", "ledger.db-shm", "comparison.png",
                "utilisation.png", "queue.png", "classes.png", "cost.png", "rofr.png")


@dataclass(frozen=True)
class WhatIf:
    """Every knob of one ``mcsched simulate`` run."""

    trace: Path
    fmt: str
    out: Path
    clouds: Path | None = None
    contract: Path | None = None
    policy: str = "contract"
    read: ReadOptions = field(default_factory=ReadOptions)
    class_priorities: str | None = None
    capacity_trace: Path | None = None
    capacity_cloud: str | None = None
    capacity_map: str | None = None
    spot_share: float = 1.0
    scale_capacity: str | None = None
    scenario: Path | None = None
    samples: int = 400
    plots: bool = True


@dataclass
class Prepared:
    """Validated inputs, ready to replay (nothing written yet)."""

    request: WhatIf
    catalog: CloudCatalog
    contract: Contract
    trace: Trace
    policies: list[str]
    priorities: dict[str, int]
    priorities_from: str
    capacity_changes: list[tuple[float, tuple[str, str, str], int]]
    driven_clouds: list[str]
    actions: list[Action]
    rules: list[Rule]
    scenario_name: str = ""

    @property
    def gpu_types(self) -> set[str]:
        return self.trace.gpu_types

    def title(self, policy: str | None = None) -> str:
        load = f"x{self.request.read.load:g}"
        scenario = f" · scenario {self.scenario_name}" if self.scenario_name else ""
        return f"{self.request.trace.name}{' · policy ' + policy if policy else ''} · load {load}{scenario}"


@dataclass
class Outcome:
    lines: list[str]
    warnings: list[str]
    files: list[str]
    summaries: dict[str, dict[str, Any]]


def _priorities(spec: str | None, contract: Contract) -> tuple[dict[str, int], str]:
    """Flag, else the contract's ``spec.classPriorities``, else api-serving > inference > training."""
    base = dict(DEFAULT_CLASS_PRIORITIES)
    source = "default: api-serving > inference > training"
    from_contract = getattr(contract.spec, "classPriorities", None)
    if from_contract:
        base.update({str(k): int(v) for k, v in from_contract.items()})
        source = "the contract's spec.classPriorities"
    if spec:
        for cls, raw in parse_map(spec, "--class-priorities").items():
            if cls not in CLASSES:
                raise TraceError(f"--class-priorities: unknown class {cls!r} (expected {', '.join(CLASSES)})")
            try:
                value = int(raw)
            except ValueError:
                value = 10_000
            if not -1000 <= value <= 1000:
                raise TraceError(f"--class-priorities: {cls}={raw}: must be a whole number -1000..1000")
            base[cls] = value
        source = "--class-priorities"
    return base, source


def prepare(req: WhatIf) -> Prepared:
    """Read and check every input; raises a one-line MCSchedError, writes nothing."""
    policies = parse_policies(req.policy)
    _check_out(req.out)
    if req.capacity_cloud and req.capacity_map:
        raise TraceError("--capacity-cloud/--capacity-map: give one of them (the default mapping onto one cloud, or an explicit one)")
    if req.samples < 10:
        raise TraceError("--samples: must be >= 10")
    catalog = load_catalog(req.clouds or default_catalog())
    contract = load_contract(req.contract or default_contract(), catalog)
    rules: list[Rule] = []
    catalog, scale_rules = cap.scale_catalog(catalog, cap.parse_scale(req.scale_capacity, catalog))
    trace = read_trace(req.trace, req.fmt, req.read)
    if not trace.jobs:
        raise TraceError(f"{req.trace}: no jobs to replay ({trace.stats.rows:,} rows read)")
    have = {t for b in catalog.spec.backends for r in b.regions for t in r.gpus}
    missing = sorted(trace.gpu_types - have)
    if missing:
        raise TraceError(
            f"the trace asks for {', '.join(missing)}, which no cloud in the catalog has; map it with --gpu-map "
            f"{missing[0]}=<one of {', '.join(sorted(have))}>"
        )
    priorities, priorities_from = _priorities(req.class_priorities, contract)
    rules += trace.stats.rules
    rules.append(Rule(trace.load_rule, f"{len(trace.jobs):,} jobs"))
    rules.append(Rule(f"class priorities {', '.join(f'{c}={p}' for c, p in priorities.items())} ({priorities_from})",
                      "a trace row's own priority overrides its class's" if any(j.priority is not None for j in trace.jobs) else "every job takes its class's"))
    rules += scale_rules
    horizon = max(j.arrival + j.duration for j in trace.jobs)
    actions: list[Action] = []
    name = ""
    if req.scenario is not None:
        name, actions = load_scenario(req.scenario, catalog)
        horizon = max(horizon, actions[-1].at)
        late = [a for a in actions if a.at > max(j.arrival + j.duration for j in trace.jobs)]
        effect = "; ".join(f"{fmt_span(a.at)}: {a.label}" for a in actions)
        if late:
            effect += f" ({len(late)} after the workload's horizon)"
        rules.append(Rule(f"scenario {name} ({req.scenario.name}), times in simulated seconds from the trace's start", effect))
    changes: list[tuple[float, tuple[str, str, str], int]] = []
    driven: list[str] = []
    if req.capacity_trace is None:
        if req.capacity_cloud or req.capacity_map:
            raise TraceError("--capacity-cloud/--capacity-map: need --capacity-trace DIR")
    else:
        if not (req.capacity_cloud or req.capacity_map):
            raise TraceError("--capacity-trace: say which pools it drives: --capacity-cloud CLOUD or --capacity-map zone=cloud/region/gpuType")
        spot = read_spot_dir(req.capacity_trace)
        if req.capacity_map:
            bindings = cap.parse_capacity_map(req.capacity_map, spot, catalog)
            unused = [f"{t.zone}: not mapped" for t in spot if t.zone not in {b.zone for b in bindings}]
        else:
            assert req.capacity_cloud is not None
            bindings, unused = cap.default_bindings(spot, catalog, req.capacity_cloud, trace.gpu_types)
        base = {(b.name, r.name, t): n for b in catalog.spec.backends for r in b.regions for t, n in r.gpus.items()}
        changes, cap_rules = cap.capacity_schedule(bindings, spot, base, req.spot_share, horizon)
        driven = sorted({b.pool[0] for b in bindings})
        rules.append(Rule(f"capacity trace {req.capacity_trace.name}: {len(spot)} zone series "
                          f"(every {spot[0].gap_seconds:g} s, {spot[0].days:.1f} days, repeated to cover the run; not compressed by --load)",
                          f"drives {', '.join(driven)} up to the workload's horizon ({fmt_span(horizon)})"))
        rules += cap_rules
        rules += [Rule(f"zone {u.split(':')[0]} unused", u.split(": ", 1)[1]) for u in unused]
    return Prepared(req, catalog, contract, trace, policies, priorities, priorities_from, changes, driven, actions, rules, name)


def _check_out(out: Path) -> None:
    """``--out`` must be a directory this run can create or write into (checked before anything is written)."""
    if out.exists() and not out.is_dir():
        raise TraceError(f"--out: {out} is a file, not a directory")
    parent = next((p for p in (out, *out.parents) if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TraceError(f"--out: {out}: cannot write there ({parent or out} is not a writable directory)")


def _clear(out: Path) -> None:
    """Remove a previous run's outputs (only files this command writes) so nothing stale is left."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    for p in POLICIES:
        if (out / p / "ledger.db").exists():
            shutil.rmtree(out / p)


def run_policy(p: Prepared, policy: str, out: Path, progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], Simulation, float]:
    """Replay one policy into ``out`` (ledger.db written as it goes); returns its summary."""
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / "ledger.db")
    started = time.perf_counter()
    try:
        sim = Simulation(p.catalog, p.contract, policy, sinks=[ledger], class_priorities=p.priorities)
        sim.add_jobs(p.trace.jobs)
        sim.add_capacity(p.capacity_changes)
        sim.add_scenario(p.actions)
        sim.run(samples=p.request.samples, progress=progress, flush=ledger.flush)
        ledger.flush()
    finally:
        ledger.close()
    wall = time.perf_counter() - started
    s = summarise(sim, p.gpu_types)
    s["spillRanking"] = spill_ranking(p.contract, policy)
    s["classPrioritiesFrom"] = p.priorities_from
    s["wallSeconds"] = wall
    s["eventsPerSecond"] = (s["events"]["engine"] + s["events"]["simulation"]) / wall if wall else 0.0
    s["inputs"] = {
        "trace": {"path": str(p.request.trace), "format": p.request.fmt, **p.trace.stats.to_dict()},
        "load": p.request.read.load,
        "rules": [r.to_dict() for r in p.rules],
        "scenario": [{"at": a.at, "event": a.label} for a in p.actions],
    }
    warnings = []
    for cloud in p.driven_clouds:
        if not s["jobsPerCloud"].get(cloud):
            warnings.append(
                f"the capacity trace drives {cloud}, but {cloud} never received work under {policy}: it changed nothing in this run "
                "(drive a cloud that gets work, e.g. the holder, or tighten the catalog with --scale-capacity)"
            )
    s["warnings"] = warnings
    return s, sim, wall


def execute(p: Prepared, progress: Callable[[int], None] | None = None) -> Outcome:
    """Replay every policy and write the outputs; returns the lines to print."""
    req = p.request
    out = req.out
    _clear(out)
    clouds = p.catalog.backend_names
    summaries: dict[str, dict[str, Any]] = {}
    images: dict[str, list[str]] = {}
    single = len(p.policies) == 1
    walls = 0.0
    for policy in p.policies:
        target = out if single else out / policy
        s, sim, wall = run_policy(p, policy, target, progress)
        walls += wall
        view = RunView(p.title(policy), sim.samples, clouds, p.contract.holder, p.gpu_types, sim.markers)
        images[policy] = plots(view, target) if req.plots else []
        summaries[policy] = s
        if not single:
            (target / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
    warnings = sorted({w for s in summaries.values() for w in s["warnings"]})
    if single:
        policy = p.policies[0]
        s = summaries[policy]
        (out / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
        write_report(out, s, images[policy], p.title(policy))
        files = ["summary.json", "report.md", "ledger.db", *images[policy]]
        lines = [headline(s, p.title(policy)), _line(s)]
    else:
        chart = plot_comparison(summaries, p.title(), out) if req.plots else ""
        (out / "summary.json").write_text(json.dumps({"policies": summaries}, indent=2, sort_keys=True) + "\n")
        report = write_comparison(out, summaries, images, chart, p.title())
        files = ["summary.json", "report.md", *([chart] if chart else []), *(f"{n}/" for n in p.policies)]
        lines = [report[0].removeprefix("# ")]
        lines += [f"{n}: {headline(summaries[n])}; {_line(summaries[n])}" for n in p.policies]
    events = sum(s["events"]["engine"] + s["events"]["simulation"] for s in summaries.values())
    lines.append(f"{len(p.trace.jobs):,} jobs x {len(p.policies)} polic{'y' if single else 'ies'} in {walls:.1f} s wall "
                 f"({events / walls if walls else 0:,.0f} events/s)")
    lines.append(f"wrote {out}/: {', '.join(files)}")
    return Outcome(lines, warnings, files, summaries)


def _line(s: dict[str, Any]) -> str:
    served = sum(s["gpuHours"]["served"].values())
    unserved = sum(s["gpuHours"]["unserved"].values())
    violations = s["contractViolations"]
    return (
        f"{s['jobs']:,} jobs over {s['span']}: served {served:,.0f} GPU-h, unserved {unserved:,.0f}; cost ${s['costUsdTotal']:,.0f} "
        f"(${s['costUsdPerServedGpuHour']:,.2f}/served GPU-h); holder share {s['holderShareOfGpuHours']:.1%}; "
        f"preemptions {sum(s['preemptions'].values()):,}; violations {f'{sum(violations.values()):,}' if violations is not None else 'n/a'}"
    )
