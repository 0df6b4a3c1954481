"""The checker's state and entry points: feed records in order, get violations.

The rules themselves live beside this module, one module per group of rules (``rofr``,
``placement``, ``eviction``, ``plans``); ``scheduler.invariants.InvariantChecker`` combines
them. Each rule group is a mixin over ``CheckerBase``: the state is one dataclass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import ValidationError

from scheduler.events import EVENT_TYPES, Event
from scheduler.invariants.model import (
    _UNSET,
    STATIC_SKIPS,
    Pool,
    Rec,
    Violation,
    _Backend,
    _Bad,
    _fmt,
    _Job,
    _PoolState,
    _spec_disagrees,
    _unknown,
)
from scheduler.specs import JOB_CLASSES, MAX_GANG_GPUS, CloudCatalog, Contract


@dataclass
class CheckerBase:
    """Feed records in order; violations accumulate (and ``feed`` returns the new ones)."""

    HANDLERS: ClassVar[dict[str, Callable[[Any, Rec], None]]] = {}  # kind -> rule handler, filled by InvariantChecker

    jobs: dict[str, _Job] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    configured: bool = False
    holder: str = ""
    mode: str = ""
    window: float = 0.0
    on_lapse: str = ""
    preemption: bool = False
    spill: str = "price-first"
    weights: tuple[float, float] = (1.0, 0.0)
    pins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    backends: dict[str, _Backend] = field(default_factory=dict)
    pools: dict[Pool, _PoolState] = field(default_factory=dict)
    by_cloud: dict[str, list[_PoolState]] = field(default_factory=dict)
    reservations: dict[str, tuple[Pool, float]] = field(default_factory=dict)  # queued job -> (pool, planned start)
    running_on: dict[Pool, dict[str, _Job]] = field(default_factory=dict)
    _order: int = 0
    _preempting: str | None = None  # a pinned job whose victims were just evicted
    _shrinking: tuple[Pool, int] | None = None  # (pool, allocation before) during capacity-lost evictions
    _plain: bool = False  # configured, and neither of the two above: ``watch``'s fast path (it and ``_on_preempted`` keep it)
    _candidates: dict[tuple[Any, ...], tuple[_PoolState, ...]] = field(default_factory=dict)
    _blocked: dict[tuple[Any, ...], str | None] = field(default_factory=dict)

    # ------------------------------------------------------------------ entry points

    def feed(self, event: Event, seq: int = 0) -> list[Violation]:
        """Check one live event (the engine's stream)."""
        return self.feed_record(seq, event.kind, event)

    def feed_record(self, seq: int, kind: str, rec: Rec) -> list[Violation]:
        """Check one record: an Event, or a type-checked ledger record (same attribute names)."""
        v = self.check(seq, kind, rec)
        return [] if v is None else [v]

    def check(self, seq: int, kind: str, rec: Rec) -> Violation | None:
        """``feed_record`` for tight loops (``audit verify``): the violation, if the record breaks a rule."""
        try:
            if self._preempting is not None or self._shrinking is not None:
                self._pending_ops(kind, rec)
            handler = self.HANDLERS.get(kind)
            if not self.configured and kind != "configured":
                raise _Bad("configuration", f"{kind} before the configured record")
            if handler is None:
                raise _Bad("malformed-record", f"unknown record kind {kind!r}")
            handler(self, rec)
        except _Bad as bad:
            return self._violation(seq, bad, rec)
        return None

    def watch(
        self, before: Mapping[type[Event], Callable[[Any], None]] | None = None, count: list[int] | None = None
    ) -> Callable[[Event], None]:
        """``feed`` for a live event stream as one plain function (the simulator's: every engine event).

        The common case (configured, no preemption or capacity loss half recorded) finds the
        handler by the event's class and skips ``check``'s preamble; anything else goes
        through ``check``: the same events break the same rules, in the same words.

        ``before``: per event class, a handler run on the event first, and ``count[0]`` counts
        the events: the simulator's recorder shares this sink (one sink, one lookup of the
        event's class, saves a call per engine event).
        """
        mine = {EVENT_TYPES[kind]: method.__get__(self) for kind, method in self.HANDLERS.items()}
        first = dict(before or {})
        table = {cls: (first.get(cls), mine.get(cls)) for cls in (*mine, *first)}
        get = table.get
        neither = (None, None)
        tally = [0] if count is None else count
        check = self.check

        def on_event(ev: Event) -> None:
            tally[0] += 1
            pre, handler = get(ev.__class__, neither)
            if pre is not None:
                pre(ev)
            if handler is not None and self._plain:
                try:
                    handler(ev)
                except _Bad as bad:
                    self._violation(0, bad, ev)
                return
            check(0, ev.kind, ev)
            self._plain = self.configured and self._preempting is None and self._shrinking is None

        return on_event

    def _violation(self, seq: int, bad: _Bad, rec: Rec) -> Violation:
        job = getattr(rec, "job", None)
        v = Violation(seq, bad.rule, job if isinstance(job, str) else None, bad.message)
        self.violations.append(v)
        return v

    def finish(self, seq: int = 0) -> list[Violation]:
        """End-of-stream rules: nothing half done, no job left between an eviction and a decision."""
        before = len(self.violations)
        if self._preempting is not None:
            self.violations.append(
                Violation(seq, "preemption", self._preempting, f"victims evicted for {self._preempting}, which was never placed")
            )
        if self._shrinking is not None:
            self.violations.append(
                Violation(
                    seq, "eviction", None, f"capacity-lost evictions on {_fmt(self._shrinking[0])} without the capacity change"
                )
            )
        for name, job in self.jobs.items():
            if job.state == "pending":
                self.violations.append(
                    Violation(seq, "lost-job", name, f"{name} was submitted or evicted but never placed or queued")
                )
        return self.violations[before:]

    # ------------------------------------------------------------------ helpers

    def _pending_ops(self, kind: str, rec: Rec) -> None:
        """Rule 7: a preemption's victims are followed by its placement; capacity-lost evictions by the change."""
        if self._preempting is not None:
            if (
                kind == "preempted"
                and getattr(rec, "reason", None) == "pinned-job"
                and getattr(rec, "by", None) == self._preempting
            ):
                return
            if kind == "placed" and getattr(rec, "job", None) == self._preempting and getattr(rec, "via", None) == "preemption":
                return
            if kind == "reservation-cleared" and getattr(rec, "job", None) == self._preempting:
                return  # the winner's own reservation ends as it is placed
            who, self._preempting = self._preempting, None
            raise _Bad("preemption", f"victims evicted for {who}, but {who} is not placed via preemption right after")
        if self._shrinking is not None:
            pool = self._shrinking[0]
            if (
                kind == "preempted"
                and getattr(rec, "reason", None) == "capacity-lost"
                and (getattr(rec, "cloud", None), getattr(rec, "region", None), getattr(rec, "gpu_type", None)) == pool
            ):
                return
            if (
                kind == "capacity-changed"
                and (getattr(rec, "cloud", None), getattr(rec, "region", None), getattr(rec, "gpu_type", None)) == pool
            ):
                return
            self._shrinking = None
            raise _Bad("eviction", f"capacity-lost evictions on {_fmt(pool)} are not followed by its capacity change")

    def _job(self, name: str) -> _Job:
        job = self.jobs.get(name)
        if job is None:
            raise _unknown(name)
        return job

    def _candidates_on(self, job: _Job, cloud: str) -> tuple[_PoolState, ...]:
        """The job's candidate pools on ``cloud``: its GPU type, within its regions and jurisdiction, catalog order."""
        key = (cloud, job.gpu_type, job.regions, job.jurisdiction)
        found = self._candidates.get(key)
        if found is None:
            found = tuple(
                p
                for p in self.by_cloud.get(cloud, ())
                if p.key[2] == job.gpu_type
                and (job.regions is None or p.key[1] in job.regions)
                and (job.jurisdiction is None or p.jurisdiction == job.jurisdiction)
            )
            self._candidates[key] = found
        return found

    def _allowed(self, job: _Job, cloud: str) -> bool:
        pins = self.pins.get(job.cls)
        return (pins is None or cloud in pins) and (job.clouds is None or cloud in job.clouds)

    def _skip_reason_holds(self, job: _Job, reason: str) -> bool:
        """Rule 3: a static reason re-derived from the catalog and the contract."""
        holder = self.holder
        pins = self.pins.get(job.cls)
        if reason == "not-in-pins":
            return pins is not None and holder not in pins
        typed = [p for p in self.by_cloud.get(holder, ()) if p.key[2] == job.gpu_type]
        if reason == "gpu-type-unavailable":
            return not typed
        in_region = [p for p in typed if job.regions is None or p.key[1] in job.regions]
        if reason == "region-constraint":
            return bool(typed) and not in_region
        if reason == "jurisdiction":
            return bool(in_region) and job.jurisdiction is not None and all(p.jurisdiction != job.jurisdiction for p in in_region)
        return False

    def _holder_blocked(self, job: _Job) -> str | None:
        """The first static reason the holder may not be offered ``job``, if any (cached per job shape)."""
        key = (job.cls, job.gpu_type, job.regions, job.jurisdiction)
        found = self._blocked.get(key, _UNSET)
        if found is not _UNSET:
            return found  # type: ignore[return-value]
        found = next((r for r in STATIC_SKIPS if self._skip_reason_holds(job, r)), None)
        self._blocked[key] = found
        return found

    def _new_attempt(self, job: _Job, attempt: int, what: str) -> None:
        """Rule 2: every attempt is fresh (higher than the last) and only for a job awaiting a decision."""
        if attempt <= job.attempt:
            raise _Bad("attempt-order", f"{what} for {job.name} reuses attempt {attempt} (the last attempt was {job.attempt})")
        if job.state not in ("pending", "queued"):
            raise _Bad("attempt-order", f"{what} for {job.name} while it is {job.state}")
        job.attempt = attempt

    # implemented by the rule mixins (declared here so each mixin may call the others)
    def _reserved_against(self, job: _Job, key: Pool, now: float, keep: float) -> bool:
        raise NotImplementedError

    def _leave(self, job: _Job, rec: Rec, what: str) -> _PoolState:
        if job.state != "running" or job.pool is None:
            raise _Bad("release-not-running", f"{job.name} {what} while {job.state}")
        key = (rec.cloud, rec.region, rec.gpu_type)
        if key != job.pool or rec.gpus != job.gpus:
            raise _Bad(
                "release-not-running", f"{job.name} {what} from {_fmt(key)} x{rec.gpus}, it runs on {_fmt(job.pool)} x{job.gpus}"
            )
        pool = self.pools[key]
        pool.allocated -= job.gpus
        del self.running_on[key][job.name]
        job.pool = None
        return pool

    # ------------------------------------------------------------------ rule 1: configuration

    def _on_configured(self, rec: Rec) -> None:
        if self.configured:
            raise _Bad("configuration", "a second configured record (the contract changes only through reconfigured)")
        try:
            catalog = CloudCatalog.model_validate(rec.catalog)
            contract = Contract.model_validate(rec.contract)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise _Bad("configuration", f"configured record is malformed: {where}: {first['msg']}") from None
        self.configured = True
        for b in catalog.spec.backends:
            rules = b.holderRules
            self.backends[b.name] = _Backend(
                b.name,
                b.up,
                b.latencySeconds + b.faults.extraLatencySeconds,
                b.startupSeconds,
                dict(b.prices),
                frozenset(rules.declineGpuTypes),
                rules.maxGangGpus,
                rules.reserveForApiServingFraction,
                dict(rules.priceFloorUsdPerGpuHour),
                rules.declineFraction,
                rules.declineSeed,
            )
            pools = self.by_cloud.setdefault(b.name, [])
            for r in b.regions:
                for gpu_type, count in r.gpus.items():
                    p = _PoolState(
                        (b.name, r.name, gpu_type), r.jurisdiction, count, b.prices[gpu_type], rules.reserveForApiServingFraction
                    )
                    p.set_capacity(count)
                    self.pools[p.key] = p
                    pools.append(p)
        self._contract(contract)

    def _contract(self, contract: Contract) -> None:
        spec = contract.spec
        holder = spec.rofr.holder
        if holder not in self.backends:
            raise _Bad("configuration", f"contract holder {holder!r} is not in the catalog")
        api = spec.pins.get("api-serving")
        if api is None or list(api) != [holder]:
            raise _Bad("configuration", f"pins.api-serving must be exactly [{holder}] (the holder), not {api}")
        self.holder = holder
        self.mode = spec.rofr.mode
        self.window = spec.rofr.windowSeconds
        self.on_lapse = spec.rofr.onLapse
        self.preemption = spec.preemption.enabled
        self.pins = {cls: tuple(clouds) for cls, clouds in spec.pins.items()}
        # The spill ranking the contract names (its model's default when unset); a contract
        # schema without ``scoring`` predates the option: DESIGN.md's earliest start first.
        scoring = getattr(spec, "scoring", None)
        self.spill = str(getattr(scoring, "spill", "start-first")) if scoring is not None else "start-first"
        weights = getattr(scoring, "weights", None)
        self.weights = (float(getattr(weights, "price", 1.0)), float(getattr(weights, "startSeconds", 0.0)))
        self._candidates.clear()
        self._blocked.clear()

    def _on_reconfigured(self, rec: Rec) -> None:
        try:
            contract = Contract.model_validate(rec.contract)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise _Bad(
                "configuration", f"reconfigured contract is malformed: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
            ) from None
        self._contract(contract)

    # ------------------------------------------------------------------ jobs

    def _on_submitted(self, rec: Rec) -> None:
        name = rec.job
        old = self.jobs.get(name)
        if old is not None and old.state in ("pending", "queued", "running"):
            raise _Bad("duplicate-job", f"{name} submitted again while {old.state}")
        spec = rec.spec
        if type(spec) is not dict:
            raise _Bad("malformed-record", "submitted spec must be an object")
        cls, gpus, gpu_type, priority = rec.cls, rec.gpus, rec.gpu_type, rec.priority
        get = spec.get
        s_name, s_cls, s_gpus, s_type, s_priority = get("name"), get("cls"), get("gpus"), get("gpu_type"), get("priority")
        # The engine's spec holds the very objects of the record's fields: a str or int is equal to
        # itself and of its own type (a float NaN is not equal to itself). Anything else is compared
        # in full; the slow path names the first field that disagrees.
        if (
            s_name is not name
            or s_cls is not cls
            or s_gpus is not gpus
            or s_type is not gpu_type
            or s_priority is not priority
            or type(name) is not str
            or type(cls) is not str
            or type(gpus) is not int
            or type(gpu_type) is not str
            or type(priority) is not int
        ) and (
            s_name != name
            or s_cls != cls
            or s_gpus != gpus
            or s_type != gpu_type
            or s_priority != priority
            or type(s_name) is not type(name)
            or type(s_cls) is not type(cls)
            or type(s_gpus) is not type(gpus)
            or type(s_type) is not type(gpu_type)
            or type(s_priority) is not type(priority)
        ):
            _spec_disagrees(rec, spec)
        if cls not in JOB_CLASSES:
            raise _Bad("malformed-record", f"unknown job class {cls!r}")
        if not 1 <= gpus <= MAX_GANG_GPUS:
            raise _Bad("malformed-record", f"gpus must be 1..{MAX_GANG_GPUS}, not {gpus}")
        self._order = order = self._order + 1
        self.jobs[name] = _Job(name, cls, gpus, gpu_type, priority, spec, order)
