"""Prometheus metrics, fed by the same event stream as the ledger.

Labels are bounded (cloud, region, gpu_type, class, outcome, reason, rule); job names never
become labels. ``contract_violations`` is driven by a live ``InvariantChecker`` over the
stream, so the alert that watches it is watching a real proof, not a constant.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from scheduler.events import (
    Answered,
    BackendChanged,
    BlockJoined,
    BlockPurchased,
    BlockReleased,
    CapacityChanged,
    Configured,
    Cordoned,
    Dequeued,
    Event,
    Placed,
    Preempted,
    Queued,
    Released,
    Submitted,
)
from scheduler.invariants import RULES, InvariantChecker
from scheduler.metrics_plans import PlanMetrics
from scheduler.specs import MODEL_PATTERN

DECISION_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
WAIT_BUCKETS = (0.1, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600)
ANSWER_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 45, 60, 120, 300)
ENFORCEMENT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120)
PROVISIONING_BUCKETS = (1, 2, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
ENFORCEMENT_ACTIONS = ("victim-stopped", "preemptor-reserved", "preemptor-running", "moved-reserved", "moved-running")


#: Repairs made from the GCS node table (runtime/nodewatch.py).
NODE_REPAIRS = ("node-capacity", "backend-down", "backend-up")


class Metrics:
    """An event sink that keeps every mcsched_* series up to date."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.submitted = Counter("mcsched_jobs_submitted_total", "Jobs accepted for scheduling.", ["class"], registry=r)
        self.placements = Counter(
            "mcsched_placements_total",
            "Gang placements by where and how (via: rofr-accepted, after-decline, after-lapse, holder-not-offered, preemption).",
            ["cloud", "region", "gpu_type", "class", "via"],
            registry=r,
        )
        self.offers = Counter("mcsched_rofr_offers_total", "ROFR gate outcomes for the holder.", ["holder", "answer", "reason"], registry=r)
        self.answer_seconds = Histogram(
            "mcsched_rofr_answer_seconds", "Holder response time per offer (lapses count as the full window).", buckets=ANSWER_BUCKETS, registry=r
        )
        self.window_seconds = Gauge("mcsched_rofr_window_seconds", "The contract's ROFR response window.", registry=r)
        self.pending = Gauge("mcsched_pending_jobs", "Jobs waiting in the queue, by why.", ["class", "reason"], registry=r)
        self.gpus = Gauge("mcsched_gpus", "GPUs per pool (state: capacity or allocated).", ["cloud", "region", "gpu_type", "state"], registry=r)
        self.decision_seconds = Histogram(
            "mcsched_decision_seconds", "Wall time per placement decision.", buckets=DECISION_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "mcsched_queue_wait_seconds", "Submit-to-placed wait per placement.", ["class"], buckets=WAIT_BUCKETS, registry=r
        )
        self.cost = Counter("mcsched_cost_usd_total", "Accrued spend of finished or evicted work.", ["cloud"], registry=r)
        self.cost_rate = Gauge("mcsched_cost_rate_usd_per_hour", "Spend rate of running work.", ["cloud"], registry=r)
        self.preemptions = Counter("mcsched_preemptions_total", "Evictions by why.", ["reason"], registry=r)
        self.violations = Counter(
            "mcsched_contract_violations_total", "Contract invariant breaches seen on the live stream (must stay 0).", ["rule"], registry=r
        )
        self.backend_up = Gauge("mcsched_backend_up", "1 when the mock backend is up.", ["cloud"], registry=r)
        self.backend_cordoned = Gauge(
            "mcsched_backend_cordoned", "1 while the cloud is cordoned (mcsched drain): no new placements.", ["cloud"], registry=r
        )
        self.running_jobs = Gauge("mcsched_running_jobs", "Placed jobs by cloud and class.", ["cloud", "class"], registry=r)
        for rule in RULES:
            self.violations.labels(rule)
        self.ledger_tree_size = Gauge("mcsched_ledger_tree_size", "Records in the audit ledger's latest signed checkpoint.", registry=r)
        self.ledger_checkpoint_time = Gauge(
            "mcsched_ledger_checkpoint_timestamp_seconds", "Time of the audit ledger's latest signed checkpoint.", registry=r
        )
        self.ledger = LedgerMetrics(r)
        # Runtime enforcement (runtime/reconciler.py): books versus Ray, and how fast Ray follows.
        self.drift = Gauge(
            "mcsched_books_drift_gpus",
            "Books' allocation minus the GPUs Ray's placement groups hold, per pool (0 at rest; < 0: Ray holds more).",
            ["cloud", "region", "gpu_type"],
            registry=r,
        )
        self.enforcement = Histogram(
            "mcsched_enforcement_seconds",
            "Decision to Ray carrying it out (action: victim-stopped, preemptor-/moved-reserved: gang granted, preemptor-/moved-running: work started).",
            ["action"],
            buckets=ENFORCEMENT_BUCKETS,
            registry=r,
        )
        self.repairs = Counter(
            "mcsched_reconciler_repairs_total",
            "Reconciler repairs (removed-gang, ended-job, removed-foreign; node-capacity, backend-down, backend-up from Ray's nodes).",
            ["action"],
            registry=r,
        )
        for action in ENFORCEMENT_ACTIONS:
            self.enforcement.labels(action)
        for action in ("removed-gang", "ended-job", "removed-foreign", *NODE_REPAIRS):
            self.repairs.labels(action)
        # Clouds as Ray nodes (runtime/nodewatch.py): the books' capacity against the live nodes'.
        self.node_drift = Gauge(
            "mcsched_node_capacity_drift_gpus",
            "Books' capacity minus what the cloud's live Ray nodes advertise, per pool (0 at rest).",
            ["cloud", "region", "gpu_type"],
            registry=r,
        )
        self.nodes = Gauge(
            "mcsched_nodes",
            "Ray worker nodes per cloud by state: alive, dead (GCS node table); provisioning (bought blocks not joined yet), "
            "released (bought blocks stopped since the scheduler started).",
            ["cloud", "state"],
            registry=r,
        )
        # Capacity blocks (scheduler/provision.py): purchase -> node joined, from the block-joined events.
        self.node_provisioning = Histogram(
            "mcsched_node_provisioning_seconds", "A bought capacity block's node: purchase to joined.", ["cloud"],
            buckets=PROVISIONING_BUCKETS, registry=r,
        )  # fmt: skip
        self.blocks = Counter(
            "mcsched_capacity_blocks_total", "Capacity blocks by what happened (purchased, joined, released-idle, released-failed, released-lost).",
            ["cloud", "what"], registry=r,
        )  # fmt: skip
        self.foreign_gpus = Gauge(
            "mcsched_foreign_gangs_gpus",
            "GPUs of a pool held by placement groups that mcsched did not create (0 at rest; see foreignGroups).",
            ["cloud", "region", "gpu_type"],
            registry=r,
        )
        self.ended = Counter(
            "mcsched_jobs_ended_total", "Jobs that left for good, by how (finished, failed, stopped, cancelled).", ["class", "reason"], registry=r
        )
        self.serve = ServeMetrics(r)
        self.plans = PlanMetrics(r)  # planned-start slips, GPUs idle for a plan
        self.checker = InvariantChecker()
        self._queued: dict[str, Any] = {}  # queued job -> its mcsched_pending_jobs child (class, reason)
        self._price: dict[str, float] = {}
        self._rate: dict[str, float] = {}
        self._seq = 0
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # One handler per event type (a dict lookup instead of a chain of isinstance checks).
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            Submitted: self._on_submitted, Answered: self._on_answered, Placed: self._on_placed, Queued: self._on_queued,
            Preempted: self._on_ended, Released: self._on_ended, Dequeued: self._on_dequeued,
            BackendChanged: self._on_backend, CapacityChanged: self._on_capacity, Configured: self._configure,
            Cordoned: self._on_cordoned,
            BlockPurchased: self._on_block, BlockJoined: self._on_block, BlockReleased: self._on_block,
        }
        self._dispatch: dict[type[Event], tuple[Callable[[Any], None] | None, Callable[[Any], None] | None]] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: ``labels()`` validates and locks on every
        call, most of this sink's cost at the soak's ~70k events per 10k jobs."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def __call__(self, ev: Event) -> None:
        # One lookup of the event's class finds both its handler here and the plan metrics' one,
        # and the checker is asked directly (``check``, not ``feed``'s list): three to five Python
        # calls per event fewer than asking each sink in turn.
        self._seq += 1
        kind = type(ev)
        try:
            handle, plan = self._dispatch[kind]
        except KeyError:  # first event of its type: its handlers by class (a subclass is handled as its base)
            handle, plan = self._dispatch[kind] = (
                next((self._handlers[c] for c in kind.__mro__ if c in self._handlers), None), self.plans.handler(kind))
        if plan is not None:
            plan(ev)
        v = self.checker.check(self._seq, ev.kind, ev)
        if v is not None:
            self._child(self.violations, v.rule).inc()
        if handle is not None:
            handle(ev)

    def _left_queue(self, job: str) -> None:
        """The job left the queue (placed, dequeued, or re-queued with a new reason): its pending series goes down."""
        child = self._queued.pop(job, None)
        if child is not None:
            child.dec()

    def _on_block(self, ev: BlockPurchased | BlockJoined | BlockReleased) -> None:
        if isinstance(ev, BlockJoined):
            self._child(self.node_provisioning, ev.cloud).observe(max(ev.provisioning_seconds, 0.0))
            self._child(self.blocks, ev.cloud, "joined").inc()
        elif isinstance(ev, BlockReleased):
            self._child(self.blocks, ev.cloud, f"released-{ev.reason}").inc()
        else:
            self._child(self.blocks, ev.cloud, "purchased").inc()

    def _on_submitted(self, ev: Submitted) -> None:
        self._child(self.submitted, ev.cls).inc()

    def _on_answered(self, ev: Answered) -> None:
        self._child(self.offers, ev.holder, ev.answer, ev.reason or "none").inc()
        if ev.answer != "not-offered":
            self.answer_seconds.observe(ev.response_seconds)

    def _on_placed(self, ev: Placed) -> None:
        self._left_queue(ev.job)
        self._child(self.placements, ev.cloud, ev.region, ev.gpu_type, ev.cls, ev.via).inc()
        self._child(self.gpus, ev.cloud, ev.region, ev.gpu_type, "allocated").inc(ev.gpus)
        self._child(self.queue_wait, ev.cls).observe(max(ev.waited_seconds, 0.0))
        self._child(self.running_jobs, ev.cloud, ev.cls).inc()
        self._rate_add(ev.cloud, ev.price * ev.gpus)
        self._price[ev.job] = ev.price * ev.gpus

    def _on_queued(self, ev: Queued) -> None:
        self._left_queue(ev.job)
        # the series' child itself, shared by every job with this class and reason: no tuple per queued job
        child = self._queued[ev.job] = self._child(self.pending, ev.cls, ev.reason)
        child.inc()

    def _on_ended(self, ev: Preempted | Released) -> None:
        self._child(self.gpus, ev.cloud, ev.region, ev.gpu_type, "allocated").dec(ev.gpus)
        self._child(self.cost, ev.cloud).inc(max(ev.cost_usd, 0.0))
        self._child(self.running_jobs, ev.cloud, ev.cls).dec()
        self._rate_add(ev.cloud, -self._price.pop(ev.job, 0.0))
        if isinstance(ev, Preempted):
            self._child(self.preemptions, ev.reason).inc()
        else:
            self._child(self.ended, ev.cls, ev.reason).inc()

    def _on_dequeued(self, ev: Dequeued) -> None:
        self._left_queue(ev.job)
        self._child(self.ended, ev.cls, ev.reason).inc()

    def _on_cordoned(self, ev: Cordoned) -> None:
        self._child(self.backend_cordoned, ev.cloud).set(1 if ev.on else 0)

    def _on_backend(self, ev: BackendChanged) -> None:
        self._child(self.backend_up, ev.cloud).set(1 if ev.up else 0)

    def _on_capacity(self, ev: CapacityChanged) -> None:
        self._child(self.gpus, ev.cloud, ev.region, ev.gpu_type, "capacity").set(ev.capacity)

    def _rate_add(self, cloud: str, delta: float) -> None:
        self._rate[cloud] = max(self._rate.get(cloud, 0.0) + delta, 0.0)
        self._child(self.cost_rate, cloud).set(self._rate[cloud])

    def _configure(self, ev: Configured) -> None:
        self.window_seconds.set(ev.contract["spec"]["rofr"]["windowSeconds"])
        for b in ev.catalog["spec"]["backends"]:
            self.backend_up.labels(b["name"]).set(1 if b.get("up", True) else 0)
            self.backend_cordoned.labels(b["name"]).set(0)
            self.cost_rate.labels(b["name"]).set(0)
            self.cost.labels(b["name"])
            for r in b["regions"]:
                for gpu_type, count in r["gpus"].items():
                    self.gpus.labels(b["name"], r["name"], gpu_type, "capacity").set(count)
                    self.gpus.labels(b["name"], r["name"], gpu_type, "allocated").set(0)

    def observe_checkpoint(self, size: int, at: float) -> None:
        """A signed ledger checkpoint (an outside witness of how far the log has grown)."""
        self.ledger_tree_size.set(size)
        self.ledger_checkpoint_time.set(at)

    def observe_decisions(self, seconds: float, count: int) -> None:
        """Spread a batch's wall time over its decisions (the engine itself has no clock)."""
        if count > 0:
            per = seconds / count
            for _ in range(count):
                self.decision_seconds.observe(per)


class LedgerMetrics:
    """The evidence's health: witness cosigning and records the writer cannot vouch for.

    ``witness_lag`` is read at scrape time from the service's cosigner (how long the newest
    signed checkpoint has waited for every witness); ``unauthenticated`` counts records after
    the last checkpoint without this writer's MAC (quarantined until ``mcsched audit adopt``
    or ``truncate``; the alert ``MCSchedLedgerUnauthenticatedRecords`` watches it).
    """

    def __init__(self, r: CollectorRegistry) -> None:
        self.witnesses = Gauge(
            "mcsched_ledger_witnesses", "Witnesses the live service submits each signed checkpoint to (0: checkpoints are not cosigned).", registry=r
        )
        self.witness_lag = Gauge(
            "mcsched_ledger_witness_lag_seconds",
            "How long the newest signed checkpoint has waited for all witnesses' cosignatures (0: caught up, or no witness).",
            registry=r,
        )
        self.unauthenticated = Gauge(
            "mcsched_ledger_unauthenticated_records",
            "Ledger records after the last checkpoint without the writer's MAC: quarantined (not signed, not restored) until adopted or truncated.",
            registry=r,
        )

    def watch_witnesses(self, count: int, lag: Callable[[], float]) -> None:
        """Export the cosigner's lag, read at each scrape (no polling thread)."""
        self.witnesses.set(count)
        self.witness_lag.set_function(lag)


TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_CODE = re.compile(r"^[1-5][0-9][0-9]$")
#: The gateway's error codes (the ``code`` of its OpenAI error bodies): the ``error`` label's values.
ERROR_CODES = frozenset({
    "invalid_json", "unknown_parameter", "missing_field", "invalid_type", "invalid_value", "context_length_exceeded",
    "request_too_large", "not_found", "model_not_found", "method_not_allowed", "missing_api_key", "invalid_api_key",
    "rate_limit_exceeded", "keys_unavailable", "no_ready_replica", "replica_failed", "internal_error",
})  # fmt: skip
MAX_KEY_LABELS = 20  # key names become label values only while there are few; then "other"
_KEY = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MODEL = re.compile(MODEL_PATTERN)


class ServeMetrics:
    """Served models (scheduler/runtime/serve): reports pushed by the controllers and gateways.

    Labels stay bounded: a model label is a served model's name (or ``none`` for requests
    naming no served model), a code a 3-digit HTTP status; anything else is dropped.
    """

    def __init__(self, r: CollectorRegistry) -> None:
        self.replicas = Gauge("mcsched_serve_replicas", "Serve replicas answering, by where Ray runs them.", ["model", "cloud", "region"], registry=r)
        self.requests = Counter("mcsched_serve_requests_total", "OpenAI API requests by HTTP status.", ["model", "code"], registry=r)
        self.ttft = Histogram("mcsched_serve_ttft_seconds", "Time to first token at the gateway.", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.scale_events = Counter(
            "mcsched_serve_scale_events_total", "Replica placements added (up) or released (down) by autoscaling.", ["model", "direction"], registry=r
        )
        self.errors = Counter(
            "mcsched_serve_errors_total",
            "Requests the gateway refused or failed, by HTTP status, OpenAI error code and API key name (none: no valid key).",
            ["code", "error", "key"],
            registry=r,
        )
        self._pools: dict[str, set[tuple[str, str]]] = {}
        self._keys: set[str] = set()
        # For a restarted exporter (``snapshot``/``restore``): replica counts and every label set seen.
        self._counts: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, set[tuple[str, ...]]] = {"requests": set(), "errors": set(), "ttft": set(), "scale": set()}

    def _key(self, name: object) -> str:
        if not isinstance(name, str) or not (name == "none" or _KEY.match(name)):
            return "other"
        if name not in self._keys and len(self._keys) >= MAX_KEY_LABELS:
            return "other"
        self._keys.add(name)
        return name

    @staticmethod
    def _model(name: object) -> str | None:
        return name if isinstance(name, str) and (name == "none" or _MODEL.match(name)) else None

    def apply(self, report: dict[str, Any]) -> None:
        rep = report.get("replicas")
        if isinstance(rep, dict) and (model := self._model(rep.get("model"))):
            now = {(str(c), str(rg)): int(n) for c, rg, n in rep.get("pools", [])}
            for gone in self._pools.get(model, set()) - now.keys():
                self.replicas.labels(model, *gone).set(0)
            for (cloud, region), n in now.items():
                self.replicas.labels(model, cloud, region).set(n)
            self._pools[model] = set(now)
            service = rep.get("service")
            self._counts[model] = {"service": service if isinstance(service, str) else "", "pools": sorted([c, rg, n] for (c, rg), n in now.items())}
        for model, direction in report.get("scale", []):
            if self._model(model) and direction in ("up", "down"):
                self.scale_events.labels(model, direction).inc()
                self._seen["scale"].add((model, direction))
        for model, code, n in report.get("requests", []):
            if self._model(model) and isinstance(code, str) and _CODE.match(code) and isinstance(n, int) and n > 0:
                self.requests.labels(model, code).inc(n)
                self._seen["requests"].add((model, code))
        for row in report.get("errors", []):
            if not (isinstance(row, list | tuple) and len(row) == 4):
                continue
            code, error, key, n = row
            if isinstance(code, str) and _CODE.match(code) and isinstance(n, int) and n > 0:
                labels = (code, error if error in ERROR_CODES else "other", self._key(key))
                self.errors.labels(*labels).inc(n)
                self._seen["errors"].add(labels)
        for model, samples in (report.get("ttft") or {}).items():
            if self._model(model):
                self.ttft.labels(model)
                self._seen["ttft"].add((model,))
                for v in samples[:10_000]:
                    if isinstance(v, int | float) and 0 <= v < 86_400:
                        self.ttft.labels(model).observe(v)


    def snapshot(self) -> dict[str, Any]:
        """What a restarted exporter needs to bring every serving series back: the replica
        counts per model and pool (with the service that owns them) and every label set seen."""
        return {"replicas": dict(sorted(self._counts.items())), "labels": {k: sorted(map(list, v)) for k, v in self._seen.items()}}

    def restore(self, snap: dict[str, Any], live: Any = lambda service: True) -> None:
        """Bring the series of ``snapshot`` back after a restart: replica gauges of the services
        ``live(service)`` says still run, and every counter and histogram series at zero (a
        counter reset, which Prometheus' ``rate`` and ``increase`` handle), through the same
        bounded checks as a live report."""
        for model, entry in (snap.get("replicas") or {}).items():
            if isinstance(entry, dict) and live(entry.get("service", "")):
                self.apply({"replicas": {"model": model, "service": entry.get("service"), "pools": entry.get("pools", [])}})
        labels = snap.get("labels") or {}
        for model, code in labels.get("requests", []):
            if self._model(model) and isinstance(code, str) and _CODE.match(code):
                self.requests.labels(model, code)
                self._seen["requests"].add((model, code))
        for code, error, key in labels.get("errors", []):
            if isinstance(code, str) and _CODE.match(code):
                restored = (code, error if error in ERROR_CODES else "other", self._key(key))
                self.errors.labels(*restored)
                self._seen["errors"].add(restored)
        for (model,) in labels.get("ttft", []):
            if self._model(model):
                self.ttft.labels(model)
                self._seen["ttft"].add((model,))
        for model, direction in labels.get("scale", []):
            if self._model(model) and direction in ("up", "down"):
                self.scale_events.labels(model, direction)
                self._seen["scale"].add((model, direction))


def read_only(app: Any) -> Any:
    """A WSGI wrapper that answers anything but GET/HEAD with 405: scrapes read, nobody writes."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
            return [b"the metrics endpoint is read-only\n"]
        return app(environ, start_response)

    return wrapped


def serve(metrics: Metrics, port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics (GET only) on a daemon thread, like prometheus_client.start_http_server."""
    import threading
    from wsgiref.simple_server import make_server

    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

    httpd = make_server(host, port, read_only(make_wsgi_app(metrics.registry)), ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, name="mcsched-metrics", daemon=True).start()
