"""A what-if run end to end: validate every input, replay each policy, write the outputs.

``prepare`` reads and checks everything (trace, catalog, contract, scenario, capacity
mapping, knobs) and raises a one-line ``MCSchedError`` before anything is written;
``execute`` replays each policy through the real engine, computes one summary per policy
(``summarise``, once) and renders summary.json, report.md and the plots from it, plus a
signed ledger per policy when ``--ledger`` asks for one. Everything is written into a
temporary folder beside ``--out`` that replaces the previous outputs only at the end, so an
interrupted run (Ctrl-C) leaves them intact. ``mcsched simulate`` only parses its options
into a ``WhatIf`` and prints what ``execute`` returns.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.errors import TraceError
from scheduler.ledger.compact import SUFFIX, wants_compact
from scheduler.ledger.signing import key_id, load_public_key
from scheduler.loading import load_catalog, load_contract
from scheduler.paths import default_catalog, default_contract
from scheduler.sim import capacity as cap
from scheduler.sim.costs import CostModel, committed_gpus, load_costs
from scheduler.sim.costs import describe as describe_costs
from scheduler.sim.policies import POLICIES, parse_policies, spill_ranking, with_holder_declines
from scheduler.sim.report import RunView, render
from scheduler.sim.scenario import Action, load_scenario
from scheduler.sim.simulator import DEFAULT_CLASS_PRIORITIES, Simulation
from scheduler.sim.summary import fmt_span, summarise
from scheduler.sim.traces import CLASSES, ReadOptions, Rule, Trace, parse_map, read_spot_dir, read_trace
from scheduler.sim.worker import ReplayWorker
from scheduler.specs import CloudCatalog, Contract

LEDGER_BATCH = 8192  # simulation events per batch sent to the worker (the ledger: one transaction each)
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
    horizon: float | None = None  # seconds; None: last arrival + longest job
    unserved_rate: float | None = None  # USD per unserved GPU-hour; None: the holder's on-demand price
    ledger: Path | None = None  # None: no ledger (a replay's default)
    costs: Path | None = None  # a cost model (committed, on-demand, spot); None: the catalog's on-demand prices
    holder_decline_rate: float = 0.0  # share of the offers it has room for that the holder declines at discretion
    seed: int = 0  # the draws of those declines


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
    horizon: float = 0.0
    costs: CostModel | None = None

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


def default_horizon_of(trace: Trace) -> float:
    """Last arrival + longest job; demand with a fixed end (a serving replica) counts up to its end, not its arrival + length twice."""
    movable = [j for j in trace.jobs if not j.fixed_end]
    ends = [j.arrival + j.duration for j in trace.jobs if j.fixed_end]
    if movable:
        ends.append(max(j.arrival for j in movable) + max(j.duration for j in movable))
    return max(ends)


def prepare(req: WhatIf) -> Prepared:
    """Read and check every input; raises a one-line MCSchedError, writes nothing."""
    policies = parse_policies(req.policy)
    check_out(req.out)
    if req.capacity_cloud and req.capacity_map:
        raise TraceError("--capacity-cloud/--capacity-map: give one of them (the default mapping onto one cloud, or an explicit one)")
    if req.samples < 10:
        raise TraceError("--samples: must be >= 10")
    catalog = load_catalog(req.clouds or default_catalog())
    contract = load_contract(req.contract or default_contract(), catalog)
    rules: list[Rule] = []
    catalog, scale_rules = cap.scale_catalog(catalog, cap.parse_scale(req.scale_capacity, catalog))
    if not (0.0 <= req.holder_decline_rate <= 1.0):
        raise TraceError(f"--holder-decline-rate: {req.holder_decline_rate:g}: must be a share between 0 and 1")
    if not 0 <= req.seed < 2**63:
        raise TraceError(f"--seed: {req.seed}: must be a whole number >= 0")
    if req.holder_decline_rate > 0:
        catalog = with_holder_declines(catalog, contract.holder, req.holder_decline_rate, req.seed)
        rules.append(Rule(f"holder declines {req.holder_decline_rate:.0%} of the offers it has room for (--holder-decline-rate, seed {req.seed})",
                          "declined at-discretion: movable work spills to the next cloud, pinned work (api-serving) waits for the next offer"))
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
    if req.unserved_rate is not None and not (req.unserved_rate >= 0 and math.isfinite(req.unserved_rate)):
        raise TraceError("--unserved-rate: must be a number of USD per GPU-hour >= 0")
    default_horizon = default_horizon_of(trace)
    if req.horizon is not None:
        if not (req.horizon > 0 and math.isfinite(req.horizon)):
            raise TraceError("--horizon: must be a number of seconds > 0")
        horizon = req.horizon
        rules.append(Rule(f"horizon {fmt_span(horizon)} (--horizon)", f"the default would be {fmt_span(default_horizon)} (last arrival + longest job)"))
    else:
        horizon = default_horizon
        rules.append(Rule(f"horizon {fmt_span(horizon)}: last arrival + longest job (the default; --horizon sets it)",
                          "the run stops there; jobs not started by then are unserved, their waits censored"))
    actions: list[Action] = []
    name = ""
    if req.scenario is not None:
        name, actions = load_scenario(req.scenario, catalog)
        late = [a for a in actions if a.at > horizon]
        effect = "; ".join(f"{fmt_span(a.at)}: {a.label}" for a in actions)
        if late:
            effect += f" ({len(late)} after the horizon: not applied)"
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
                          f"drives {', '.join(driven)} up to the horizon ({fmt_span(horizon)})"))
        rules += cap_rules
        rules += [Rule(f"zone {u.split(':')[0]} unused", u.split(": ", 1)[1]) for u in unused]
    if req.ledger is not None:
        if req.ledger.exists() and req.ledger.is_dir():
            raise TraceError(f"--ledger: {req.ledger} is a directory; name the ledger file, e.g. {req.ledger / 'ledger.db'}")
        parent = next((q for q in req.ledger.parents if q.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise TraceError(f"--ledger: {req.ledger}: cannot write there ({parent or req.ledger.parent} is not a writable directory)")
        for policy in policies:
            # A re-run replaces the ledger an earlier replay wrote (it always writes FILE.pub beside it);
            # anything else there, a live or `plan --db` ledger above all, is evidence it must not destroy.
            db, pub = ledger_paths(req.ledger, policy, len(policies) > 1)
            if db.exists() and not pub.is_file():
                raise TraceError(f"--ledger: {db} exists and is not a ledger an earlier `mcsched simulate` wrote (no {pub.name} beside it); "
                                 "simulate replaces only its own: pass a new path")
    costs = None
    if req.costs is not None:
        costs = load_costs(req.costs, catalog)
        rules.append(Rule(describe_costs(costs, req.costs, catalog), "committed GPUs are paid for the whole horizon, used or not; usage above them at the on-demand or spot rate"))
    return Prepared(req, catalog, contract, trace, policies, priorities, priorities_from, changes, driven, actions, rules, name, horizon, costs)


def check_out(out: Path) -> None:
    """``--out`` must be a directory this run can create or write into (checked before anything is written)."""
    if out.exists() and not out.is_dir():
        raise TraceError(f"--out: {out} is a file, not a directory")
    parent = next((p for p in (out, *out.parents) if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TraceError(f"--out: {out}: cannot write there ({parent or out} is not a writable directory)")


def _clear(out: Path) -> None:
    """Remove a previous run's outputs (only files this command writes) so nothing stale is left."""
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    for p in POLICIES:
        if (out / p / "summary.json").exists() or (out / p / "ledger.db").exists():
            shutil.rmtree(out / p)


def _publish(tmp: Path, out: Path) -> None:
    """Put the finished outputs in place of the previous ones (a whole new folder in one rename when there was none)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    _clear(out)
    for entry in tmp.iterdir():
        os.replace(entry, out / entry.name)
    tmp.rmdir()


def ledger_paths(path: Path, policy: str, several: bool) -> tuple[Path, Path]:
    """The ledger and public key files of one policy (``ledger-cheapest.db``, ``ledger-cheapest.db.zst`` when several run)."""
    sealed = SUFFIX if wants_compact(path) else ""
    base = Path(str(path).removesuffix(sealed))
    db = base.with_name(f"{base.stem}-{policy}{base.suffix}{sealed}") if several else path
    return db, db.with_name(db.name + ".pub")


Moves = list[tuple[Path, Path]]


def run_policy(
    p: Prepared, policy: str, work: Path, progress: Callable[[int], None] | None = None, ledger_to: Path | None = None
) -> tuple[dict[str, Any], Simulation, float, Moves]:
    """Replay one policy; returns its summary (computed once, here), the simulation, the wall time
    and the ledger files to move in place once everything is written.

    ``ledger_to``: write a signed ledger there, with a key made for this run in ``work``; the
    private half is deleted with ``work``, so the key signs this ledger and nothing else.
    """
    moves: Moves = []
    info: dict[str, str] | None = None
    plain: Path | None = None
    sealed: Path | None = None
    keys = work / f".key-{policy}"
    if ledger_to is not None:
        db, pub = ledger_paths(ledger_to, policy, len(p.policies) > 1)
        plain = work / db.name.removesuffix(SUFFIX)
        sealed = work / db.name if wants_compact(db) else None  # FILE.zst: one zstd frame (~10x smaller), read as is by mcsched audit
        info = {"policy": policy, "path": str(db), "publicKey": str(pub)}
    # the ledger (when asked for) and the contract's checker run in a worker process beside the replay
    worker = ReplayWorker(plain, signing_key=keys / "ledger-signing.key", seal_to=sealed, check=True)
    started = time.perf_counter()
    try:
        sim = Simulation(p.catalog, p.contract, policy, sinks=[worker.sink], class_priorities=p.priorities,
                         committed=committed_gpus(p.costs), check=False)
        sim.add_jobs(p.trace.jobs)
        sim.add_capacity(p.capacity_changes)
        sim.add_scenario(p.actions)
        sim.run(samples=p.request.samples, progress=progress, flush=worker.flush, horizon=p.horizon, flush_every=LEDGER_BATCH)
        worker.end()  # the worker finishes the checks and signs, closes and seals the ledger while the summary's figures are computed
    except BaseException:
        worker.abort()
        raise
    wall = time.perf_counter() - started
    violations = worker.wait()
    sim.adopt_checks(violations or [])
    s = summarise(sim, p.gpu_types, p.request.unserved_rate, p.costs)
    if ledger_to is not None and info is not None:
        info["keyId"] = key_id(load_public_key(keys / "ledger-signing.pub"))
        db, pub = ledger_paths(ledger_to, policy, len(p.policies) > 1)
        (keys / "ledger-signing.key").unlink()  # the private half: this ledger's signatures are all it was for
        moves += [(work / db.name, db), (keys / "ledger-signing.pub", pub)]
    s["ledger"] = info
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
    refused = s["refusedAtAdmission"]["count"]
    if refused:
        warnings.append(f"{refused:,} jobs refused at admission under {policy} (no allowed pool can ever host them): counted as unserved; "
                        f"first: {s['refusedAtAdmission']['first'][0]}")
    s["warnings"] = warnings
    return s, sim, wall, moves


def _move(moves: Moves) -> None:
    """Put ledger files in place (after the outputs: a ledger may live inside ``--out``)."""
    for src, dst in moves:
        dst.parent.mkdir(parents=True, exist_ok=True)
        for stale in (dst, dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
            stale.unlink(missing_ok=True)
        shutil.move(src, dst)


def execute(p: Prepared, progress: Callable[[int], None] | None = None) -> Outcome:
    """Replay every policy and write the outputs; returns the lines to print.

    Everything goes to a temporary folder beside ``--out`` first; it replaces the previous
    outputs only once all is written, so an interrupted run leaves them as they were.
    """
    out = p.request.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))  # the outputs, renamed to --out at the end
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work-", dir=out.parent))  # ledgers and their throwaway keys
    try:
        outcome, moves = _execute(p, tmp, work, progress)
        _publish(tmp, out)
        _move(moves)
    finally:
        for d in (tmp, work):
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)
    return outcome


def _execute(p: Prepared, tmp: Path, work: Path, progress: Callable[[int], None] | None) -> tuple[Outcome, Moves]:
    """1. replay each policy and summarise it (once); 2. render every output from those summaries and the plots' samples."""
    req = p.request
    summaries: dict[str, dict[str, Any]] = {}
    views: dict[str, RunView] = {}
    moves: Moves = []
    for policy in p.policies:
        s, sim, _wall, more = run_policy(p, policy, work, progress, req.ledger)
        moves += more
        summaries[policy] = s
        views[policy] = RunView(p.title(policy), sim.samples, sim.catalog.backend_names, p.contract.holder, p.gpu_types, sim.markers)
    lines, files, notes = render(tmp, summaries, views, p.title(), draw=req.plots)
    wall = sum(s["wallSeconds"] for s in summaries.values())
    events = sum(s["events"]["engine"] + s["events"]["simulation"] for s in summaries.values())
    n = len(p.policies)
    lines += [f"{len(p.trace.jobs):,} jobs x {n} polic{'y' if n == 1 else 'ies'} in {wall:.1f} s wall ({events / wall if wall else 0:,.0f} events/s)",
              f"wrote {req.out}/: {', '.join(files)}", *notes]
    warnings = sorted({w for s in summaries.values() for w in s["warnings"]})
    return Outcome(lines, warnings, files, summaries), moves
