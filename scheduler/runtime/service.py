"""The scheduler service: owns the engine, the ledger and the metrics inside one actor.

A plain class (Ray is applied by ``actor.py``'s factory) whose constructor does no I/O:
the ledger is opened, the state rebuilt and the exporter started on first use, so a
restarted actor recovers the same way a fresh one starts. Every request is validated here
(a caller cannot choose its own placement or skip the ROFR) and every change is committed
to the ledger before it is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from scheduler.engine import QUEUED, RUNNING, TERMINAL, Engine
from scheduler.errors import MCSchedError
from scheduler.events import Event
from scheduler.ledger import Ledger
from scheduler.metrics import Metrics, serve
from scheduler.model import Job
from scheduler.specs import CloudCatalog, Contract, JobDoc
from scheduler.wallclock import WallClock

log = logging.getLogger("mcsched.service")
RECONCILE_SECONDS = 1.0


class SchedulerService:
    def __init__(
        self,
        catalog: dict[str, Any],
        contract: dict[str, Any],
        ledger_path: str,
        metrics_port: int | None = 9464,
        metrics_host: str = "127.0.0.1",
        pg_lister: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self._catalog_doc = catalog
        self._contract_doc = contract
        self._ledger_path = ledger_path
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._pg_lister = pg_lister
        self.engine: Engine | None = None
        self.ledger: Ledger | None = None
        self.metrics: Metrics | None = None
        self._changed: asyncio.Condition | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self.recovered_events = 0

    # ------------------------------------------------------------------ start-up / recovery

    def _ensure(self) -> Engine:
        if self.engine is not None:
            return self.engine
        catalog = CloudCatalog.model_validate(self._catalog_doc)
        contract = Contract.model_validate(self._contract_doc)
        metrics = Metrics()
        # Key and witness beside the ledger (its state dir) unless MCSCHED_SIGNING_KEY/_WITNESS say otherwise.
        ledger = Ledger(
            self._ledger_path,
            home=os.path.dirname(os.path.abspath(self._ledger_path)),
            on_checkpoint=lambda cp: metrics.observe_checkpoint(cp.size, cp.time),
        )
        if ledger.checkpoint is not None:
            metrics.observe_checkpoint(ledger.checkpoint.size, ledger.checkpoint.time)
        recorded = list(ledger.events())
        self.recovered_events = len(recorded)
        sinks: list[Callable[[Event], None]] = [ledger, metrics]
        if recorded:
            # The ledger is the source of truth: recover with the configuration it recorded.
            for ev in recorded:
                metrics(ev)
            configured = ledger.last_configured()
            if configured is not None:
                catalog = CloudCatalog.model_validate(configured.catalog)
                contract = Contract.model_validate(configured.contract)
            engine = Engine.restore(catalog, contract, WallClock(), recorded, sinks)
        else:
            engine = Engine(catalog, contract, WallClock())
            for sink in sinks:
                engine.subscribe(sink)
            engine.announce()
        ledger.flush()
        self.engine, self.ledger, self.metrics = engine, ledger, metrics
        if self._metrics_port is not None:
            try:
                serve(metrics, self._metrics_port, self._metrics_host)
            except OSError as exc:
                log.warning("metrics port %s unavailable: %s", self._metrics_port, exc)
        return engine

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
        if self._reconciler is None and self._pg_lister is not None:
            self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_loop())

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            try:
                if self.reconcile():
                    await self._notify()
            except Exception:  # a failed step must not stop the loop
                log.exception("reconcile step failed")

    def reconcile(self) -> int:
        """Release jobs whose driver's placement group is gone (``ray job stop``, driver died)."""
        engine = self._ensure()
        bound = engine.bound_jobs()  # recorded in the ledger, so this survives actor restarts
        if self._pg_lister is None or not bound:
            return 0
        live = self._pg_lister()
        released = 0
        for name, (_attempt, pg_id) in bound.items():
            if live.get(pg_id) in ("CREATED", "PENDING", "RESCHEDULING"):
                continue
            engine.release(name, "stopped")
            released += 1
        if released:
            self._commit()
        return released

    # ------------------------------------------------------------------ API (batched)

    async def ping(self) -> dict[str, Any]:
        engine = self._ensure()
        self._start_reconciler()
        return {"holder": engine.holder, "jobs": len(engine.jobs), "recovered_events": self.recovered_events}

    async def submit(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        """Validate and place a batch; all-or-nothing on bad input; idempotent on retries."""
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
            if rec is not None and rec.job == job and rec.state not in TERMINAL:
                continue  # a retried call after a restart: already acknowledged, do nothing twice
            fresh.append(job)
        started = time.perf_counter()
        try:
            engine.place_many(fresh)
        except MCSchedError as exc:
            assert self.ledger is not None
            self.ledger.discard()
            return {"ok": False, "error": str(exc), "decisions": []}
        self._commit(started, len(fresh))
        await self._notify()
        return {"ok": True, "error": None, "decisions": [engine.status(j.name).to_dict(True) for j in parsed]}

    async def wait_placed(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Long-poll: return when ``name`` is no longer queued, or after ``timeout``."""
        engine = self._ensure()
        if self._changed is None:
            self._changed = asyncio.Condition()
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._changed:
            while True:
                d = engine.status(name)
                remaining = deadline - asyncio.get_running_loop().time()
                if d.outcome != "queued" or remaining <= 0:
                    return d.to_dict(True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    async def bind(self, name: str, pg_id: str) -> None:
        """A driver holds the job's placement group; its disappearance releases the job."""
        engine = self._ensure()
        engine.bind(name, pg_id)
        self._commit()

    async def release(self, name: str, reason: str = "finished") -> dict[str, Any]:
        engine = self._ensure()
        rec = engine.jobs.get(name)
        if rec is None or rec.state not in (RUNNING, QUEUED):
            return engine.status(name).to_dict()
        d = engine.release(name, reason)
        self._commit()
        await self._notify()
        return d.to_dict()

    async def cancel(self, name: str) -> dict[str, Any]:
        engine = self._ensure()
        d = engine.cancel(name)
        self._commit()
        await self._notify()
        return d.to_dict()

    async def status(self, name: str | None = None) -> list[dict[str, Any]]:
        engine = self._ensure()
        if name is not None:
            return [engine.status(name).to_dict(True)]
        return [d.to_dict(True) for d in engine.decisions()]

    async def fault(self, cloud: str, up: bool | None = None, extra_latency_seconds: float | None = None) -> None:
        engine = self._ensure()
        engine.set_backend(cloud, up=up, extra_latency_seconds=extra_latency_seconds)
        self._commit()
        await self._notify()

    async def usage(self) -> list[dict[str, Any]]:
        engine = self._ensure()
        return [_usage(u) for u in engine.usage()]

    async def serve_report(self, report: dict[str, Any]) -> None:
        """Serving metrics from the serve controllers and gateways (scheduler/runtime/serve/),
        exported here so one scrape target carries every mcsched_* series."""
        self._ensure()
        assert self.metrics is not None
        self.metrics.serve.apply(report)

    async def pid(self) -> int:
        return os.getpid()

    async def verify(self) -> str:
        self._ensure()
        assert self.ledger is not None
        return self.ledger.verify().line()


def _usage(u: Any) -> dict[str, Any]:
    return {"cloud": u.cloud, "region": u.region, "gpu_type": u.gpu_type, "capacity": u.capacity, "allocated": u.allocated}
