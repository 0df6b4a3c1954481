"""The scheduler service: owns the engine, the ledger and the metrics inside one actor.

A plain class (Ray is applied by ``actor.py``'s factory) whose constructor does no I/O:
the ledger is opened, the state rebuilt and the exporter started on first use, so a
restarted actor recovers the same way a fresh one starts. Every request is validated here
(a caller cannot choose its own placement or skip the ROFR) and every change is committed
to the ledger before it is acknowledged.

After the decision, the engine's books are the desired state and Ray's placement groups
the actual one. Drivers converge on the books (``wait_change`` long-polls a job's
assignment version; ``bind``/``report``/``end`` tell the books what Ray did), and a
reconcile loop (``reconciler.compare`` on the GCS's gangs, every second) exports the drift
and repairs what a lost driver left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from scheduler.decision import Decision
from scheduler.errors import AdmissionError, MCSchedError
from scheduler.events import Dequeued, Event, Placed, Preempted, Released
from scheduler.runtime.driver import DEFAULT_GRACE_SECONDS, grace_seconds
from scheduler.runtime.nodewatch import NodePlan, PoolBooks, RayNode, plan_nodes
from scheduler.runtime.provisioner import BlockNodes, Provisioner
from scheduler.runtime.reconciler import (
    FOREIGN_POLICIES,
    Assignment,
    EnforcementTimer,
    Gang,
    Plan,
    compare,
    parse_gang_name,
)
from scheduler.runtime.resources import pool_resource
from scheduler.runtime.serve.naming import replica_index, service_of_replica
from scheduler.runtime.serve.owner import Owner, Runner
from scheduler.specs import CloudCatalog, Contract, JobDoc
from scheduler.wallclock import WallClock

if TYPE_CHECKING:  # imported where used: every Ray job driver imports this module (Ray loads the actor's
    # class to call it) and needs none of the engine, the ledger (cryptography) or prometheus
    from scheduler.engine import Engine
    from scheduler.ledger import Ledger
    from scheduler.ledger.signing import Checkpoint
    from scheduler.ledger.store import Quarantine
    from scheduler.ledger.witness import Cosigner
    from scheduler.metrics import Metrics

log = logging.getLogger("mcsched.service")
RECONCILE_SECONDS = 1.0
#: Beside the ledger: the serving series' last replica counts and label sets (metrics.ServeMetrics.snapshot),
#: so a restarted actor exports every series at once instead of when each controller next reports.
SERVE_METRICS_FILE = "serve-metrics.json"
LEASE_SECONDS = 15.0  # a driver renews its lease at least every POLL_SECONDS (driver.py); 3x slack
#: The witnesses the live service submits each signed checkpoint to, when not passed explicitly:
#: base URLs separated by commas or spaces. Unset or empty: checkpoints are signed, not cosigned.
WITNESS_ENV = "MCSCHED_WITNESS_URLS"
#: While the ledger is quarantined, a request re-opens it at most this often (an operator's
#: ``mcsched audit adopt`` / ``truncate`` is picked up without restarting the actor).
QUARANTINE_RECHECK_SECONDS = 2.0


def witness_urls(configured: list[str] | None) -> list[str]:
    """``configured``, else ``$MCSCHED_WITNESS_URLS`` (split on commas and spaces), else none."""
    if configured is not None:
        return [u for u in configured if u]
    return os.environ.get(WITNESS_ENV, "").replace(",", " ").split()


class Gangs(Protocol):
    """The actual side, as Ray's GCS has it (``actor.RayGangs``; tests pass a fake)."""

    def read(self) -> list[Gang]: ...

    def remove(self, pg_id: str) -> None: ...

    def creator(self, pg_id: str) -> str: ...


class Nodes(Protocol):
    """The GCS node table (``actor.RayNodes``; tests pass a fake)."""

    def read(self) -> list[RayNode]: ...


CORDON_FILE = "cordoned.json"


class SchedulerService:
    def __init__(
        self,
        catalog: dict[str, Any],
        contract: dict[str, Any],
        ledger_path: str,
        metrics_port: int | None = 9464,
        metrics_host: str = "127.0.0.1",
        gangs: Gangs | None = None,
        lease_seconds: float = LEASE_SECONDS,
        foreign_groups: str = "report",
        witnesses: list[str] | None = None,
        serve_runner: Runner | None = None,
        nodes: Nodes | None = None,
        blocks: BlockNodes | None = None,
    ) -> None:
        if foreign_groups not in FOREIGN_POLICIES:
            raise AdmissionError(f"foreignGroups: {foreign_groups!r} is not one of {', '.join(FOREIGN_POLICIES)}")
        self._catalog_doc = catalog
        self._contract_doc = contract
        self._ledger_path = ledger_path
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._gangs = gangs
        self._nodes = nodes
        # Capacity blocks (runtime/provisioner.py): bought and released by the reconcile loop.
        self.provisioner = Provisioner(blocks, os.path.dirname(os.path.abspath(ledger_path))) if blocks is not None else None
        self._clock = WallClock()
        self.last_node_plan: NodePlan | None = None
        self._lease_seconds = lease_seconds
        self._foreign_policy = foreign_groups
        self._foreign: dict[str, str] = {}  # foreign placement group id -> its creator (asked once)
        self._witnesses = witnesses  # None: $MCSCHED_WITNESS_URLS, read in the actor's own process
        self.cosigner: Cosigner | None = None
        self.quarantine: Quarantine | None = None  # records the writer cannot vouch for: no decisions until resolved
        self._quarantine_checked = 0.0
        self._serving = False
        self.engine: Engine | None = None
        self.ledger: Ledger | None = None
        self.metrics: Metrics | None = None
        self._changed: asyncio.Condition | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self.recovered_events = 0
        self.timer = EnforcementTimer()
        # Jobs whose driver holds a lease: name -> when it last called. The names are kept in
        # a file beside the ledger so that a restarted actor (or `mcsched up` after `down`)
        # still knows which jobs had a driver; the times restart at recovery (a grace period).
        self.leases: dict[str, float] = {}
        self.last_plan: Plan | None = None
        self._serve_snapshot: dict[str, Any] | None = None
        # Graceful eviction: a driver drains its evicted work for the job's grace period before it
        # removes the gang; the reconciler leaves such a gang alone meanwhile (``_draining``).
        self._grace: dict[str, float] = {}
        self._stale_since: dict[str, float] = {}
        # Served models: this actor runs their controllers (serve/owner.py); None until first use.
        self._serve_runner = serve_runner
        self._owner: Owner | None = None

    # ------------------------------------------------------------------ start-up / recovery

    def _ensure(self) -> Engine:
        if self.engine is not None:
            return self.engine
        if self.quarantine is not None and time.monotonic() - self._quarantine_checked < QUARANTINE_RECHECK_SECONDS:
            raise self.quarantine
        engine = self._recover()
        with contextlib.suppress(RuntimeError):  # called outside an event loop (tests): no loop to run in
            asyncio.get_running_loop()
            self._start_reconciler()  # whichever call reaches a (re)started actor first
        resumed = self._served_models().resume()  # the served models this actor owned before a restart
        if resumed:
            log.warning("resuming served models after a restart: %s", ", ".join(resumed))
        return engine

    def _served_models(self) -> Owner:
        if self._owner is None:
            self._owner = Owner(os.path.dirname(os.path.abspath(self._ledger_path)), self._serve_runner or _own_service)
        return self._owner

    def _recover(self) -> Engine:
        from scheduler.engine import Engine
        from scheduler.ledger import Ledger
        from scheduler.ledger.store import Quarantine
        from scheduler.ledger.witness import Cosigner
        from scheduler.metrics import Metrics

        catalog = CloudCatalog.model_validate(self._catalog_doc)
        contract = Contract.model_validate(self._contract_doc)
        # One registry for the actor's life: a quarantined start serves it before any event is fed.
        metrics = self.metrics if self.metrics is not None else Metrics()
        self.metrics = metrics
        urls = witness_urls(self._witnesses)
        cosigner = Cosigner(Path(self._ledger_path), urls) if urls else None

        def on_checkpoint(cp: Checkpoint) -> None:
            metrics.observe_checkpoint(cp.size, cp.time)
            if cosigner is not None:
                cosigner.notify()  # wakes its thread: a slow or down witness never delays a decision

        # The signing and MAC keys beside the ledger (its state dir) unless MCSCHED_SIGNING_KEY says otherwise.
        try:
            ledger = Ledger(
                self._ledger_path,
                home=os.path.dirname(os.path.abspath(self._ledger_path)),
                on_checkpoint=on_checkpoint,
                on_leaves=cosigner.add_leaves if cosigner is not None else None,  # the writer's hashes, not hashed twice
            )
        except Quarantine as q:
            # Never restore from, nor sign, records this writer cannot vouch for: stay up without an
            # engine, export their count (the alert), answer every request with the one line.
            self.quarantine, self._quarantine_checked = q, time.monotonic()
            metrics.ledger.unauthenticated.set(q.last - q.first + 1)
            log.error("%s", q)
            self._serve_metrics(metrics)
            raise
        self.quarantine = None
        metrics.ledger.unauthenticated.set(0)
        if ledger.checkpoint is not None:
            metrics.observe_checkpoint(ledger.checkpoint.size, ledger.checkpoint.time)
        if cosigner is not None:
            self.cosigner = cosigner.start()
            cosigner.notify()  # the latest checkpoint (signed before this start, perhaps never cosigned)
            metrics.ledger.watch_witnesses(len(urls), cosigner.lag)
        else:
            metrics.ledger.watch_witnesses(0, lambda: 0.0)
            log.warning("no witness configured (%s): the ledger's checkpoints are signed but not cosigned", WITNESS_ENV)
        recorded = list(ledger.events())
        self.recovered_events = len(recorded)
        sinks: list[Callable[[Event], None]] = [ledger, metrics, self._on_event]
        if recorded:
            # The ledger is the source of truth: recover with the configuration it recorded.
            for ev in recorded:
                metrics(ev)
            configured = ledger.last_configured()
            if configured is not None:
                catalog = CloudCatalog.model_validate(configured.catalog)
                contract = Contract.model_validate(configured.contract)
            engine = Engine.restore(catalog, contract, self._clock, recorded, sinks)
        else:
            engine = Engine(catalog, contract, self._clock)
            for sink in sinks:
                engine.subscribe(sink)
            engine.announce()
        ledger.flush()
        self.engine, self.ledger, self.metrics = engine, ledger, metrics
        self._restore_serve_metrics(engine, metrics)
        now = time.time()
        self.leases = {name: now for name in self._load_leases() if _live(engine, name)}
        self._serve_metrics(metrics)
        return engine

    def _serve_metrics(self, metrics: Metrics) -> None:
        from scheduler.metrics import serve

        if self._metrics_port is not None and not self._serving:
            try:
                serve(metrics, self._metrics_port, self._metrics_host)
                self._serving = True
            except OSError as exc:
                log.warning("metrics port %s unavailable: %s", self._metrics_port, exc)

    def _serve_metrics_file(self) -> Path:
        return Path(os.path.dirname(os.path.abspath(self._ledger_path))) / SERVE_METRICS_FILE

    def _restore_serve_metrics(self, engine: Engine, metrics: Metrics) -> None:
        """Every serving series back at start-up; replica gauges only for services whose
        replicas the books still hold placed (a service that ended meanwhile shows none)."""
        try:
            snap = json.loads(self._serve_metrics_file().read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): serving series return as controllers report", self._serve_metrics_file(), exc)
            return
        placed = {service_of_replica(name) for name in engine.jobs if engine.status(name).outcome == "placed"}
        try:
            metrics.serve.restore(snap, live=lambda service: service in placed)
        except (TypeError, ValueError, AttributeError) as exc:
            log.warning("%s: bad entry (%s): serving series return as controllers report", self._serve_metrics_file(), exc)
        self._serve_snapshot = metrics.serve.snapshot()

    def _save_serve_metrics(self, snap: dict[str, Any]) -> None:
        path = self._serve_metrics_file()
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(snap))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot save %s: %s", path, exc)

    def _on_event(self, ev: Event) -> None:
        """Live events only (sinks attach after recovery): decision times and ended leases."""
        if isinstance(ev, Preempted):
            self.timer.evicted(ev.job, ev.at)
        elif isinstance(ev, Placed):
            self.timer.placed(ev.job, ev.attempt, ev.via, ev.at)
        elif isinstance(ev, Released | Dequeued):
            self.timer.ended(ev.job)
            if self.leases.pop(ev.job, None) is not None:
                self._save_leases()

    @property
    def _lease_file(self) -> Path:
        return Path(self._ledger_path + ".leases.json")

    def _load_leases(self) -> list[str]:
        try:
            names = json.loads(self._lease_file.read_text())
        except (OSError, ValueError):
            return []
        return [n for n in names if isinstance(n, str)]

    def _save_leases(self) -> None:
        tmp = self._lease_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self.leases)))
        os.replace(tmp, self._lease_file)

    def _renew(self, name: str) -> None:
        if name in self.leases:
            self.leases[name] = time.time()

    def _commit(self, started: float | None = None, decisions: int = 0) -> None:
        assert self.ledger is not None and self.metrics is not None
        self.ledger.flush()
        if started is not None:
            self.metrics.observe_decisions(time.perf_counter() - started, decisions)

    async def _notify(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    def _start_reconciler(self) -> None:
        if self._reconciler is None and (self._gangs is not None or self._nodes is not None):
            self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_loop())

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            try:
                repaired = 0
                if self._nodes is not None:  # nodes first: a lost node's work is evicted before its gangs are judged
                    table = await asyncio.to_thread(self._nodes.read)
                    repaired += await self.provision(table)  # a joined block is recorded before the capacity it brings
                    repaired += self.reconcile_nodes(table)
                if self._gangs is not None:
                    repaired += self.reconcile(await asyncio.to_thread(self._gangs.read))
                if repaired:
                    await self._notify()
            except Exception:  # a failed step must not stop the loop
                log.exception("reconcile step failed")

    # ------------------------------------------------------------------ clouds as Ray nodes

    def cordoned(self) -> set[str]:
        """Clouds closed to new placements: the engine's cordons (kept in the ledger, so a restart keeps them)."""
        return {name for name, b in self._ensure().backends.items() if b.cordoned}

    def reconcile_nodes(self, nodes: list[RayNode]) -> int:
        """One tick against the GCS node table (``nodewatch.plan_nodes``): export the node counts
        and the capacity drift, and bring the books to what the live nodes advertise. Returns the
        repairs made. Order: clouds going down first, then capacities, then clouds coming up."""
        engine = self._ensure()
        assert self.metrics is not None
        inventory = engine.inventory
        pools = {
            (u.cloud, u.region, u.gpu_type): PoolBooks(u.capacity, inventory.pools[(u.cloud, u.region, u.gpu_type)].ceiling, u.allocated)
            for u in engine.usage()
        }
        backends_up = {name: b.up for name, b in engine.backends.items()}
        plan = plan_nodes(pools, backends_up, nodes)
        self.last_node_plan = plan
        for cloud in plan.managed:
            for state in ("alive", "dead"):
                self.metrics.nodes.labels(cloud, state).set(plan.nodes.get((cloud, state), 0))
        for key, drift in plan.drift.items():
            self.metrics.node_drift.labels(*key).set(drift)
        with self._clock.held():  # one instant per tick's repairs (WallClock.held says why)
            repairs = self._repair_nodes(engine, plan, pools)
        if repairs:
            self._commit()
            for key in plan.capacity:  # repaired: Ray and the books agree now
                self.metrics.node_drift.labels(*key).set(0)
        return repairs

    def _repair_nodes(self, engine: Engine, plan: NodePlan, pools: dict[tuple[str, str, str], PoolBooks]) -> int:
        assert self.metrics is not None
        repairs = 0
        for cloud, up in sorted(plan.up.items()):
            if not up:
                log.warning("drift: %s has no live Ray node; the books mark it down", cloud)
                engine.set_backend(cloud, up=False)
                self.metrics.repairs.labels("backend-down").inc()
                repairs += 1
        for key, capacity in sorted(plan.capacity.items()):
            log.warning("drift: %s has %d GPUs in the books, %d on its live Ray nodes; repaired", "/".join(key), pools[key].capacity, capacity)
            engine.set_capacity(*key, capacity)
            self.metrics.repairs.labels("node-capacity").inc()
            repairs += 1
        for cloud, up in sorted(plan.up.items()):
            if up:
                log.warning("%s has a live Ray node again; the books mark it up", cloud)
                engine.set_backend(cloud, up=True)
                self.metrics.repairs.labels("backend-up").inc()
                repairs += 1
        return repairs

    async def provision(self, nodes: list[RayNode]) -> int:
        """One tick of capacity blocks (``runtime/provisioner.py``): record the bought nodes that
        joined, failed or were lost, stop idle ones, buy blocks for queued jobs. Returns the
        changes made. Starting and stopping nodes runs off the event loop; the events are
        recorded after, at one instant (``WallClock.held``)."""
        prov = self.provisioner
        plan = self.last_node_plan
        if prov is None or plan is None:
            return 0
        engine = self._ensure()
        assert self.metrics is not None
        if not prov.blocks and not any(r.blocks for b in engine.catalog.spec.backends for r in b.regions):
            return 0  # nothing bought in blocks (the default catalog): not even the placement-group read
        busy = await asyncio.to_thread(prov.nodes.busy_nodes)
        step = prov.plan(engine, nodes, busy, plan.managed, self._clock.now(), self.cordoned())
        for b, reason in step.gone:
            log.warning("capacity block %s (%s/%s/%s, %d GPUs) %s", b.name, b.cloud, b.region, b.gpu_type, b.gpus,
                        {"idle": "idle: released", "failed": "never joined: stopped", "lost": "lost"}[reason])  # fmt: skip
            await asyncio.to_thread(prov.nodes.stop, b.name)
        started: dict[str, bool] = {}
        for b, node_type in step.bought:
            log.warning("buying a capacity block of %s/%s/%s for %s: node %s, %d GPUs, quoted ready in %.0f s",
                        b.cloud, b.region, b.gpu_type, b.job, b.name, b.gpus, b.ready_at - b.bought_at)  # fmt: skip
            try:
                await asyncio.to_thread(prov.nodes.start, node_type)
                started[b.name] = True
            except Exception:  # a node that cannot start is not bought; the next tick may try again
                log.exception("capacity block %s did not start", b.name)
        prov.done(step, started)
        step.bought = [x for x in step.bought if started.get(x[0].name)]
        for cloud in plan.managed:
            self.metrics.nodes.labels(cloud, "provisioning").set(len(prov.in_flight(cloud)))
            self.metrics.nodes.labels(cloud, "released").set(prov.released.get(cloud, 0))
        if step.empty:
            return 0
        with self._clock.held() as at:
            for ev in step.events(at):
                engine.record(ev)
        self._commit()
        await self._notify()
        return len(step.joined) + len(step.gone) + len(step.bought)

    # ------------------------------------------------------------------ the books' side of a job

    def _view(self, name: str) -> dict[str, Any]:
        """What a driver sees: the decision, its placement attempt and the assignment version."""
        d = self._ensure().status(name)
        return {"version": d.version, "attempt": d.attempt, "decision": self._buying(d.to_dict(True))}

    def _end(self, name: str, reason: str) -> Decision | None:
        """End a running or queued job for good; None if it has already ended.

        A queued job leaves only as ``cancelled`` or ``stopped`` (ledger rule 8): a driver whose
        work completed while the books had re-queued it stops it rather than finishing it.
        """
        engine = self._ensure()
        outcome = engine.status(name).outcome
        if outcome == "queued" and reason not in ("cancelled", "stopped"):
            reason = "stopped"
        return engine.release(name, reason) if outcome in ("placed", "queued") else None

    def _assignments(self, names: set[str]) -> list[Assignment]:
        engine = self._ensure()
        out: list[Assignment] = []
        for name in names:
            if name not in engine.jobs:
                continue
            d = engine.status(name)
            if d.outcome == "placed" and d.cloud and d.region:
                out.append(Assignment(name, d.attempt, "running", (d.cloud, d.region, d.gpu_type), d.gpus))
            elif d.outcome == "queued":
                out.append(Assignment(name, d.attempt, "queued"))
        return out

    def reconcile(self, gangs: list[Gang]) -> int:
        """One tick: export the drift, remove stale gangs, end jobs whose driver and gang are gone.

        Returns how many repairs it made (the caller wakes long-polls when > 0).
        """
        engine = self._ensure()
        assert self.metrics is not None
        named = {p[0] for g in gangs if (p := parse_gang_name(g.name)) is not None}
        pools = {(u.cloud, u.region, u.gpu_type): u.allocated for u in engine.usage()}
        plan = compare(pools, self._assignments(named | set(self.leases)), gangs, self.leases, time.time(), self._lease_seconds)
        self.last_plan = plan
        for key, drift in plan.drift.items():
            self.metrics.drift.labels(*key).set(drift)
        repairs = 0
        now = time.time()
        self._stale_since = {g.pg_id: self._stale_since.get(g.pg_id, now) for g in plan.remove}
        for gang in plan.remove:
            parsed = parse_gang_name(gang.name)
            if parsed is not None and self._draining(parsed[0], gang.pg_id, now):
                continue
            if self._gangs is not None:
                with contextlib.suppress(Exception):  # already gone: nothing to repair
                    self._gangs.remove(gang.pg_id)
            self.metrics.repairs.labels("removed-gang").inc()
            if parsed is not None:
                self._observe(self.timer.stopped(parsed[0], time.time()))
            repairs += 1
        repairs += self._foreign_groups(plan, pools)
        for name in plan.end:
            log.warning("%s: its driver and its placement group are gone; ending it as stopped", name)
            self._end(name, "stopped")
            self.metrics.repairs.labels("ended-job").inc()
            repairs += 1
        if plan.end:
            self._commit()
        return repairs

    def _foreign_groups(self, plan: Plan, pools: dict[tuple[str, str, str], int]) -> int:
        """Placement groups on the pools that mcsched did not create: exported, reported once
        with their creator, and removed under ``foreignGroups: evict``. Returns the removals."""
        assert self.metrics is not None
        by_resource = {pool_resource(*key): key for key in pools}
        held = dict.fromkeys(pools, 0.0)
        seen: dict[str, str] = {}
        removed = 0
        for g in plan.foreign:
            creator = self._foreign.get(g.pg_id)
            if creator is None:
                creator = self._gangs.creator(g.pg_id) if self._gangs is not None else "unknown"
                where = ", ".join(f"{amount:g} {resource}" for resource, amount in sorted(g.resources.items()) if resource in by_resource)
                log.warning("foreign placement group %s (name %r, created by %s) holds %s; policy: %s",
                            g.pg_id, g.name, creator, where, self._foreign_policy)  # fmt: skip
            seen[g.pg_id] = creator
            for resource, amount in g.resources.items():
                if resource in by_resource:
                    held[by_resource[resource]] += amount
            if self._foreign_policy == "evict" and self._gangs is not None:
                with contextlib.suppress(Exception):  # gone already
                    self._gangs.remove(g.pg_id)
                self.metrics.repairs.labels("removed-foreign").inc()
                removed += 1
        self._foreign = seen
        for key, gpus in held.items():
            self.metrics.foreign_gpus.labels(*key).set(gpus)
        return removed

    def _draining(self, job: str, pg_id: str, now: float) -> bool:
        """Is this stale gang its live driver's to drain? Graceful eviction: the driver tells the
        work to stop, waits up to the job's grace period, then removes the gang itself. The
        reconciler removes it only once the driver's lease lapses or the grace period is over,
        so a dead driver still leaves nothing behind."""
        renewed = self.leases.get(job)
        if renewed is None or now - renewed > self._lease_seconds:
            return False
        return now - self._stale_since.get(pg_id, now) < self._grace.get(job, DEFAULT_GRACE_SECONDS)

    def _observe(self, seen: tuple[str, float] | None) -> None:
        if seen is not None and self.metrics is not None:
            self.metrics.enforcement.labels(seen[0]).observe(seen[1])

    # ------------------------------------------------------------------ API (batched)

    async def ping(self) -> dict[str, Any]:
        """Alive, and what it holds. A quarantined ledger answers too (``quarantined``: the one line),
        so the actor stays up, its metric and alert report it, and every other call refuses with that line."""
        from scheduler.ledger.store import Quarantine

        try:
            engine = self._ensure()
        except Quarantine as q:
            return {"holder": None, "jobs": 0, "recovered_events": 0, "quarantined": str(q)}
        self._start_reconciler()
        return {"holder": engine.holder, "jobs": len(engine.jobs), "recovered_events": self.recovered_events, "quarantined": None}

    async def submit(self, jobs: list[dict[str, Any]], driver: bool = False) -> dict[str, Any]:
        """Validate and place a batch; all-or-nothing on bad input; idempotent on retries.

        ``driver=True``: the caller will run these jobs and renew their leases (``wait_change``);
        a job whose driver stops calling and whose gang is gone is ended as ``stopped``.
        """
        from scheduler.model import Job

        engine = self._ensure()
        self._start_reconciler()
        try:
            parsed = [Job.from_doc(JobDoc.model_validate(doc)) for doc in jobs]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return {"ok": False, "error": f"{where}: {first['msg']}", "decisions": []}
        fresh: list[Job] = []
        for job in parsed:
            rec = engine.jobs.get(job.name)
            if rec is not None and rec.job == job and _live(engine, job.name):
                continue  # a retried call after a restart: already acknowledged, do nothing twice
            fresh.append(job)
        started = time.perf_counter()
        try:
            engine.place_many(fresh)
        except MCSchedError as exc:  # refused before any event: the batch is validated whole first
            return {"ok": False, "error": str(exc), "decisions": []}
        self._commit(started, len(fresh))
        if driver:
            now = time.time()
            for job, doc in zip(parsed, jobs, strict=True):
                self.leases[job.name] = now
                self._grace[job.name] = grace_seconds(doc.get("spec") or {})
            self._save_leases()
        await self._notify()
        views = [self._view(j.name) for j in parsed]
        # "fresh": submitted now (a retry of a live job is not): its driver starts it from scratch,
        # never from the checkpoint an earlier, ended job of the same name left behind
        return {"ok": True, "error": None, "decisions": [v["decision"] for v in views], "views": views,
                "fresh": [j.name for j in fresh]}

    async def wait_change(self, name: str, known: int, timeout: float = 5.0) -> dict[str, Any]:
        """Long-poll: return the job's view as soon as its assignment version differs from ``known``
        (or after ``timeout``). Each call renews the caller's lease on the job."""
        engine = self._ensure()
        if self._changed is None:
            self._changed = asyncio.Condition()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while True:
                self._renew(name)
                remaining = deadline - loop.time()
                if engine.version(name) != known or remaining <= 0:
                    return self._view(name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_placed(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Long-poll: return when ``name`` is no longer queued, or after ``timeout``."""
        engine = self._ensure()
        deadline = time.monotonic() + timeout
        view = self._view(name)
        while engine.status(name).outcome == "queued" and time.monotonic() < deadline:
            view = await self.wait_change(name, view["version"], deadline - time.monotonic())
        return dict(view["decision"])

    async def bind(self, name: str, ref: str, attempt: int | None = None) -> bool:
        """A driver holds placement ``attempt``'s gang (Ray placement group ``ref``).

        False if the attempt is stale (the job moved or ended meanwhile): the caller must
        drop that gang. Recorded in the ledger, so an actor restart knows the binding.
        """
        engine = self._ensure()
        self._renew(name)
        d = engine.status(name)
        if d.outcome != "placed" or (attempt is not None and d.attempt != attempt):
            return False
        try:
            engine.bind(name, ref, d.attempt)
        except AdmissionError:
            return False
        self._commit()
        return True

    async def report(self, name: str, attempt: int, phase: str) -> None:
        """The runtime's progress on a decision: ``reserved`` (the attempt's gang is granted),
        ``running`` (its work started) or ``stopped`` (an evicted placement's work is stopped
        and its gang removed)."""
        self._ensure()
        self._renew(name)
        now = time.time()
        if phase == "reserved":
            self._observe(self.timer.reserved(name, attempt, now))
        elif phase == "running":
            self._observe(self.timer.running(name, attempt, now))
        elif phase == "stopped":
            self._observe(self.timer.stopped(name, now))

    async def end(self, name: str, attempt: int | None, reason: str) -> dict[str, Any]:
        """The driver is done with the job (``finished``, ``failed``, ``stopped``).

        Only the placement the driver ran is ended: a report for an attempt the books have
        already replaced (the job moved meanwhile) changes nothing. ``attempt=None`` ends
        whatever the job holds now (the work completed, wherever the books have it).
        """
        engine = self._ensure()
        d = engine.status(name)
        ours = attempt is None or (d.outcome == "placed" and d.attempt == attempt) or (d.outcome == "queued" and reason == "stopped")
        if ours and self._end(name, reason) is not None:
            self._commit()
            await self._notify()
        self.leases.pop(name, None)
        return self._view(name)

    async def release(self, name: str, reason: str = "finished") -> dict[str, Any]:
        """End a job for good, whatever its attempt (an operator's call; drivers use ``end``)."""
        d = self._end(name, reason)
        if d is None:
            return self._ensure().status(name).to_dict()
        self._commit()
        await self._notify()
        return d.to_dict()

    async def cancel(self, name: str) -> dict[str, Any]:
        """``mcsched cancel``: the books end the job; its driver sees the change and stops the Ray job."""
        engine = self._ensure()
        d = engine.cancel(name)
        self._commit()
        await self._notify()
        return d.to_dict()

    async def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """One job, a served model by its own name (one row per replica), or every job."""
        engine = self._ensure()
        if name is not None:
            if name not in engine.jobs:
                replicas = sorted((k, n) for n in engine.jobs if (k := replica_index(n, name)) is not None)
                if replicas:
                    return [self._buying(engine.status(n).to_dict(True)) for _, n in replicas]
            return [self._buying(engine.status(name).to_dict(True))]
        return [self._buying(d.to_dict(True)) for d in engine.decisions()]

    def _buying(self, row: dict[str, Any]) -> dict[str, Any]:
        """A queued job a capacity block is being bought for says so (``waiting``: what it waits for now)."""
        if self.provisioner is not None and row.get("outcome") == "queued":
            line = self.provisioner.buying(row["job"], self._clock.now())
            if line is not None:
                row["waiting"] = line if not row.get("waiting") else f"{line}; {row['waiting']}"
                row.setdefault("plannedStart", None)
        return row

    async def fault(self, cloud: str, up: bool | None = None, extra_latency_seconds: float | None = None) -> None:
        engine = self._ensure()
        engine.set_backend(cloud, up=up, extra_latency_seconds=extra_latency_seconds)
        self._commit()
        await self._notify()

    async def capacity(self, cloud: str, region: str, gpu_type: str, capacity: int) -> None:
        engine = self._ensure()
        with self._clock.held():  # see WallClock.held
            engine.set_capacity(cloud, region, gpu_type, capacity)
        self._commit()
        await self._notify()

    async def catalog(self) -> dict[str, Any]:
        """The catalog the scheduler runs with (the ledger's, after a recovery)."""
        return self._ensure().catalog.model_dump(mode="json", by_alias=True)

    async def nodes(self) -> dict[str, Any]:
        """The clouds as Ray nodes, as the last reconcile saw them: up state, node counts, drift, cordons."""
        engine = self._ensure()
        plan = self.last_node_plan
        return {
            "reconciled": plan is not None,
            "managed": sorted(plan.managed) if plan else [],
            "up": {name: b.up for name, b in engine.backends.items()},
            "nodes": {f"{c}/{s}": n for (c, s), n in plan.nodes.items()} if plan else {},
            "drift": {"/".join(k): v for k, v in plan.drift.items() if v} if plan else {},
            "at_rest": plan.at_rest if plan else False,
            "cordoned": sorted(self.cordoned()),
        }

    async def cordon(self, cloud: str, on: bool = True, move: bool = False) -> dict[str, list[str]]:
        """``mcsched drain CLOUD``: no new placements there (``--undo`` lifts it); running work
        stays, or with ``move`` the movable part is placed again through the ROFR gate
        (``Engine.drain``). Returns the cordoned clouds and the jobs moved."""
        engine = self._ensure()
        moved = engine.drain(cloud, on=on, move=move)
        self._commit()
        await self._notify()
        return {"cordoned": sorted(self.cordoned()), "moved": moved}

    async def usage(self) -> list[dict[str, Any]]:
        engine = self._ensure()
        return [_usage(u) for u in engine.usage()]

    async def drift(self) -> dict[str, Any]:
        """The last reconcile's view: drift per pool (non-zero only) and whether it was at rest."""
        plan = self.last_plan
        if plan is None:
            return {"reconciled": False, "drift": {}, "at_rest": False}
        return {
            "reconciled": True,
            "drift": {"/".join(k): v for k, v in plan.drift.items() if v},
            "at_rest": plan.at_rest,
            "foreign": [
                {"id": g.pg_id, "name": g.name, "state": g.state, "creator": self._foreign.get(g.pg_id, "unknown"), "resources": dict(g.resources)}
                for g in plan.foreign
            ],
            "foreignPolicy": self._foreign_policy,
        }

    async def serve_report(self, report: dict[str, Any]) -> None:
        """Serving metrics from the serve controllers and gateways (scheduler/runtime/serve/),
        exported here so one scrape target carries every mcsched_* series."""
        self._ensure()
        assert self.metrics is not None
        self.metrics.serve.apply(report)
        snap = self.metrics.serve.snapshot()
        if snap != self._serve_snapshot:  # replicas moved or a new label set: rare, so written each time
            self._save_serve_metrics(snap)
            self._serve_snapshot = snap

    async def serve_start(self, doc: dict[str, Any], host: str, port: int) -> dict[str, Any]:
        """Own a served model (``spec.serve``): this actor runs its controller until it is stopped
        or cancelled, across its callers' exits and its own restarts. ``started`` is False when
        it is served already (the caller then follows it)."""
        self._ensure()
        try:
            checked = JobDoc.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            return {"ok": False, "error": f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", "started": False, "log": None}
        if checked.spec.serve is None:
            return {"ok": False, "error": "spec.serve: required to serve a model", "started": False, "log": None}
        owner = self._served_models()
        started = owner.start(doc, (host, int(port)))
        return {"ok": True, "error": None, "started": started, "log": owner.log_id}

    async def serve_follow(self, job: str, since: int = 0, wait: float = 0.0) -> dict[str, Any]:
        """A served model's controller lines from ``since`` on (long-poll up to ``wait`` s for new
        ones) and its end reason once it ended; ``known`` False if this actor never served it."""
        self._ensure()
        owner = self._served_models()
        deadline = time.monotonic() + wait
        got = owner.follow(job, since)
        while got["known"] and not got["lines"] and got["ended"] is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            got = owner.follow(job, since)
        return got

    async def serve_stop(self, job: str, reason: str = "stopped") -> bool:
        """Undeploy a served model and release its replicas (its controller does it next step)."""
        self._ensure()
        return self._served_models().stop(job, reason)

    async def serving(self) -> dict[str, str]:
        """The served models this actor owns: job -> serving / stopping / how it ended."""
        self._ensure()
        return self._served_models().serving()

    async def api_keys(self) -> dict[str, tuple[str, float]]:
        """The served endpoint's key table (hash -> name, rate) from the key file beside the ledger.

        Read on every call (the gateways ask every few seconds), so ``mcsched api-keys revoke``
        needs no restart. An unreadable file gives an empty table: every request is refused.
        """
        from scheduler.runtime.serve.keys import KeyStore

        self._ensure()  # the gateways call this every few seconds: a restarted actor recovers (and resumes serving) at once
        try:
            return KeyStore.in_dir(os.path.dirname(os.path.abspath(self._ledger_path))).table()
        except MCSchedError as exc:
            log.error("api keys: %s (refusing every request until fixed)", exc)
            return {}

    async def pid(self) -> int:
        return os.getpid()

    async def verify(self) -> str:
        self._ensure()
        assert self.ledger is not None
        return self.ledger.verify().line()


def _own_service(doc: dict[str, Any], endpoint: tuple[str, int], say: Callable[[str], None], *,
                 resume: bool, stop: Callable[[], str | None]) -> str:
    """The real controller (serve/controller.py): it needs Ray and Serve, so they are imported
    only once a model is served, never by an actor (or a soak) that serves none."""
    from scheduler.runtime.serve.controller import own_service

    return own_service(doc, endpoint, say, resume=resume, stop=stop)


def _live(engine: Engine, name: str) -> bool:
    return name in engine.jobs and engine.status(name).outcome in ("placed", "queued")


def _usage(u: Any) -> dict[str, Any]:
    return {"cloud": u.cloud, "region": u.region, "gpu_type": u.gpu_type, "capacity": u.capacity, "allocated": u.allocated}
