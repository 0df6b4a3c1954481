"""The independent checker: rebuild the state from the records and re-derive every answer.

It shares no code with the engine's decision path. From the records alone it rebuilds
the configuration in force (catalog, contract, holder), every pool's capacity and
allocation, each backend's up/down state and response time, the running jobs, the queue
and the reservations, and then re-derives what the contract demands of each record (the
rules of TEAM.md section 5, numbered below). The same checker proves a ledger
(``mcsched audit verify``), watches the live stream (``mcsched_contract_violations_total``)
and judges the simulator and the randomised tests, so it is written for speed: records
are plain dicts (decoded JSON or ``Event.to_record()``), state is a few dicts and slots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from scheduler.events import EVENT_TYPES, Event
from scheduler.specs import JOB_CLASSES, MAX_GANG_GPUS, CloudCatalog, Contract

Pool = tuple[str, str, str]  # (cloud, region, gpu_type)
Rec = Any  # an Event, or a typed ledger record with the same attributes

# Rule names (also the bounded label set of mcsched_contract_violations_total).
RULES = (
    "malformed-record",
    "configuration",
    "unknown-job",
    "duplicate-job",
    "attempt-order",
    "offer-missing",
    "offer-terms",
    "answer-not-holder",
    "rofr-skipped",
    "holder-answer",
    "rofr-order",
    "placement-mismatch",
    "pinned-class-off-pins",
    "over-commit",
    "double-placement",
    "preemption",
    "eviction",
    "release-not-running",
    "reservation",
    "lost-job",
)
END_REASONS = frozenset({"finished", "failed", "stopped", "cancelled"})
DEQUEUE_REASONS = frozenset({"cancelled", "stopped"})  # rule 8: a job that never ran neither finished nor failed
STATIC_SKIPS = ("not-in-pins", "gpu-type-unavailable", "region-constraint", "jurisdiction")
VIA_FOR_ANSWER = {"declined": "after-decline", "lapsed": "after-lapse", "not-offered": "holder-not-offered"}
TOLERANCE = 1e-9
_UNSET = object()  # a cache miss
_NO_COMPETITOR = (None, None)  # an offer's (competing price, cloud) when it names none: shared, not one per job


@dataclass(frozen=True, slots=True)
class Violation:
    seq: int
    rule: str
    job: str | None
    message: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.rule}: {self.message}"


class _Bad(Exception):
    """Raised inside a handler: the record breaks ``rule``."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(slots=True)
class _Backend:
    name: str
    up: bool
    response: float  # catalog latency, then the latest backend-changed latency_seconds
    startup: float
    price: dict[str, float]
    decline_types: frozenset[str]
    max_gang: int | None
    api_fraction: float
    floors: dict[str, float]


@dataclass(slots=True)
class _PoolState:
    key: Pool
    jurisdiction: str
    capacity: int
    price: float
    keep: float  # its cloud's reserveForApiServingFraction
    allocated: int = 0
    api_limit: int = 0  # the GPUs a job of another class may fill up to when its cloud holds (``set_capacity``)

    def set_capacity(self, capacity: int) -> None:
        self.capacity = capacity
        self.api_limit = int(capacity * (1.0 - self.keep))


class _Job:
    """Only what the rules need: a 100k-job replay must stay small."""

    __slots__ = (
        "answer",
        "answer_attempt",
        "attempt",
        "clouds",
        "cls",
        "competing",
        "done_attempt",
        "duration",
        "gpu_type",
        "gpus",
        "jurisdiction",
        "name",
        "offered_attempt",
        "order",
        "placed_at",
        "placed_attempt",
        "pool",
        "priority",
        "quoted_attempt",
        "quotes",
        "reason",
        "regions",
        "state",
    )

    def __init__(self, name: str, cls: str, gpus: int, gpu_type: str, priority: int, spec: dict[str, Any], order: int) -> None:
        """The submission's fields and its ``spec``, already known to be a dict (``_on_submitted`` checked it)."""
        self.name = name
        self.cls = cls
        self.gpus = gpus
        self.gpu_type = gpu_type
        self.priority = priority
        regions = spec.get("regions")
        self.regions = None if regions is None else _str_tuple(regions, "regions")
        clouds = spec.get("clouds")
        self.clouds = None if clouds is None else _str_tuple(clouds, "clouds")
        jur = spec.get("jurisdiction")
        if jur is not None and type(jur) is not str:
            raise _Bad("malformed-record", "spec.jurisdiction must be a string or null")
        self.jurisdiction: str | None = jur
        duration = spec.get("duration_hours", 1.0)
        if type(duration) is not float or not 0 < duration <= 8760:  # the common case in one test
            if type(duration) is not int or not 0 < duration <= 8760:
                raise _Bad("malformed-record", "spec.duration_hours must be a number in (0, 8760]")
            duration = float(duration)
        self.duration: float = duration
        self.order = order
        self.state = "pending"
        self.pool: Pool | None = None
        self.attempt = 0  # the current placement attempt
        self.quoted_attempt = 0
        self.quotes: Sequence[Any] = ()
        self.offered_attempt = 0
        self.competing: tuple[Any, Any] = _NO_COMPETITOR
        self.answer_attempt = 0
        self.answer = ""
        self.reason = ""
        self.done_attempt = 0  # the attempt whose outcome (placed/queued) is recorded
        self.placed_attempt = 0
        self.placed_at = 0.0


def _unknown(name: str) -> _Bad:
    return _Bad("unknown-job", f"{name} was never submitted")


def _spec_disagrees(rec: Rec, spec: dict[str, Any]) -> None:
    """Raise for the first of a submission's fields its spec disagrees with (value or type)."""
    for key, top, value in (("name", "job", rec.job), ("cls", "cls", rec.cls), ("gpus", "gpus", rec.gpus),
                            ("gpu_type", "gpu_type", rec.gpu_type), ("priority", "priority", rec.priority)):
        found = spec.get(key)
        if found != value or type(found) is not type(value):
            raise _Bad("malformed-record", f"submitted {top}={value!r} disagrees with spec.{key}={found!r}")


def _str_tuple(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if type(value) not in (list, tuple) or not value or any(type(v) is not str for v in value):
        raise _Bad("malformed-record", f"spec.{name} must be a non-empty list of strings or null")
    return tuple(value)


@dataclass
class InvariantChecker:
    """Feed records in order; violations accumulate (and ``feed`` returns the new ones)."""

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
            handler = _HANDLERS.get(kind)
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
        mine = {EVENT_TYPES[kind]: method.__get__(self) for kind, method in _HANDLERS.items()}
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
            self.violations.append(Violation(seq, "preemption", self._preempting, f"victims evicted for {self._preempting}, which was never placed"))
        if self._shrinking is not None:
            self.violations.append(Violation(seq, "eviction", None, f"capacity-lost evictions on {_fmt(self._shrinking[0])} without the capacity change"))
        for name, job in self.jobs.items():
            if job.state == "pending":
                self.violations.append(Violation(seq, "lost-job", name, f"{name} was submitted or evicted but never placed or queued"))
        return self.violations[before:]

    # ------------------------------------------------------------------ helpers

    def _pending_ops(self, kind: str, rec: Rec) -> None:
        """Rule 7: a preemption's victims are followed by its placement; capacity-lost evictions by the change."""
        if self._preempting is not None:
            if kind == "preempted" and getattr(rec, "reason", None) == "pinned-job" and getattr(rec, "by", None) == self._preempting:
                return
            if kind == "placed" and getattr(rec, "job", None) == self._preempting and getattr(rec, "via", None) == "preemption":
                return
            if kind == "reservation-cleared" and getattr(rec, "job", None) == self._preempting:
                return  # the winner's own reservation ends as it is placed
            who, self._preempting = self._preempting, None
            raise _Bad("preemption", f"victims evicted for {who}, but {who} is not placed via preemption right after")
        if self._shrinking is not None:
            pool = self._shrinking[0]
            if kind == "preempted" and getattr(rec, "reason", None) == "capacity-lost" and (getattr(rec, "cloud", None), getattr(rec, "region", None), getattr(rec, "gpu_type", None)) == pool:
                return
            if kind == "capacity-changed" and (getattr(rec, "cloud", None), getattr(rec, "region", None), getattr(rec, "gpu_type", None)) == pool:
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

    def _reserved_against(self, job: _Job, key: Pool, now: float, keep: float) -> bool:
        """Rule 9: starting ``job`` on ``key`` now would delay a planned start of a job ahead of it
        (conservative backfill): with ``job`` running there until its expected end, some planned
        start recorded for the pool no longer fits at its time, each checked as it was planned
        (in its job's share of the pool, around the planned starts of the jobs ahead of that job).
        Rebuilt from the records: running work's expected ends, overdue work one overrun step at a time."""
        ahead = sorted(
            (other.priority * -1, other.order, other, start)
            for name, (where, start) in self.reservations.items()
            if where == key and name != job.name and _ahead(other := self.jobs[name], job)
        )
        if not ahead:
            return False
        pool = self.pools[key]
        if (pool.api_limit if keep > 0.0 else pool.capacity) - pool.allocated < job.gpus:
            return False  # no room under its ceiling: not the planned starts' doing
        ends = [(_expected_end(r.placed_at + r.duration * 3600.0, now), r.gpus) for r in self.running_on.get(key, {}).values()]
        ends.append((now + job.duration * 3600.0, job.gpus))
        allocated = pool.allocated + job.gpus
        earlier: list[tuple[float, float, int]] = []
        for _, _, other, start in ahead:
            limit = pool.capacity if other.cls == "api-serving" or pool.keep <= 0.0 or key[0] != self.holder else pool.api_limit
            stop = start + other.duration * 3600.0
            for t in (start, *(c[0] for c in earlier if start < c[0] < stop)):
                free = limit - allocated + sum(n for end, n in ends if end <= t)
                held = sum(n for s, e, n in earlier if s <= t < e)
                if free - held < other.gpus:
                    return True
            earlier.append((start, stop, other.gpus))
        return False

    def _expected_answer(self, job: _Job, now: float) -> tuple[str, str, str | _PoolState]:
        """Rule 4, the holder's gate in order: (answer, reason, evidence) from the rebuilt state.

        An acceptance's evidence is the pool that fits, worded by ``_evidence`` only if a
        violation needs it (formatting it for every accepted offer was a measurable cost).
        """
        hb = self.backends[self.holder]
        if not hb.up:
            return "lapsed", "backend-down", f"{hb.name} was down"
        if hb.response > self.window:
            return "lapsed", "no-answer-within-window", f"{hb.name} answers in {hb.response:g}s > {self.window:g}s window"
        if job.gpu_type in hb.decline_types:
            return "declined", "gpu-type-not-offered", f"{hb.name} declines {job.gpu_type}"
        if hb.max_gang is not None and job.gpus > hb.max_gang:
            return "declined", "gang-too-large", f"{job.gpus} > maxGangGpus {hb.max_gang}"
        keep = 0.0 if job.cls == "api-serving" else hb.api_fraction
        api_reserve = reserved = False
        fit: _PoolState | None = None
        reservations = self.reservations
        candidates = self._candidates.get((self.holder, job.gpu_type, job.regions, job.jurisdiction))  # ``_candidates_on``'s cache
        if candidates is None:
            candidates = self._candidates_on(job, self.holder)
        gpus = job.gpus
        for p in candidates:
            allocated = p.allocated
            if p.capacity - allocated < gpus:
                continue
            if reservations and self._reserved_against(job, p.key, now, keep):
                reserved = True
                continue
            if keep > 0.0 and allocated + gpus > p.api_limit:  # ``int(p.capacity * (1.0 - keep))``: keep is p's cloud's
                api_reserve = True
                continue
            fit = p
            break
        if fit is None:
            if api_reserve:
                return "declined", "reserved-for-api-serving", "only the API share was free"
            if reserved:
                return "declined", "reserved-for-queued-job", "the free pools were reserved"
            return "declined", "no-capacity", "no holder pool had room"
        if self.mode == "match":
            c_price, c_cloud = job.competing
            if c_price is not None:
                start = next((q[3] for q in job.quotes if q[0] == c_cloud and q[2] == c_price), None)
                if start is not None and start < hb.startup:
                    return "declined", "cannot-match-start", f"competing start {start:g}s < startup {hb.startup:g}s"
                if c_price < hb.price.get(job.gpu_type, fit.price):
                    if c_price < hb.floors.get(job.gpu_type, 0.0):
                        return "declined", "below-price-floor", f"competing ${c_price:g} below the floor"
                    return "accepted", "matched", fit
        return "accepted", "accepted", fit

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
            )
            pools = self.by_cloud.setdefault(b.name, [])
            for r in b.regions:
                for gpu_type, count in r.gpus.items():
                    p = _PoolState((b.name, r.name, gpu_type), r.jurisdiction, count, b.prices[gpu_type], rules.reserveForApiServingFraction)
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
            raise _Bad("configuration", f"reconfigured contract is malformed: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from None
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

    def _on_quoted(self, rec: Rec) -> None:
        job = self.jobs.get(rec.job)
        if job is None:
            raise _unknown(rec.job)
        attempt = rec.attempt
        if attempt != job.attempt:
            self._new_attempt(job, attempt, "quoted")
        elif job.quoted_attempt == attempt:
            raise _Bad("attempt-order", f"second quoted record for {job.name} attempt {attempt}")
        job.quoted_attempt = attempt
        quotes = rec.quotes
        job.quotes = quotes if type(quotes) is tuple else list(quotes)  # an event's tuple is immutable: no copy

    def _on_offered(self, rec: Rec) -> None:
        """Rule 2: a fresh offer per attempt, from the current holder, on the contract's terms."""
        job = self.jobs.get(rec.job)  # ``_job`` inlined in the handlers every job goes through
        if job is None:
            raise _unknown(rec.job)
        attempt = rec.attempt
        if rec.holder != self.holder:
            raise _Bad("answer-not-holder", f"{job.name} offered to {rec.holder}, but the holder is {self.holder}")
        if self.mode == "match":
            if job.quoted_attempt != attempt or attempt != job.attempt:
                raise _Bad("offer-missing", f"match mode: {job.name} attempt {attempt} offered without its quotes first")
        elif attempt != job.attempt:
            if attempt > job.attempt and (job.state == "pending" or job.state == "queued"):
                job.attempt = attempt  # ``_new_attempt`` inlined: every job's first offer
            else:
                self._new_attempt(job, attempt, "offered")
        if job.offered_attempt == attempt:
            raise _Bad("attempt-order", f"second offer of {job.name} in attempt {attempt}")
        job.offered_attempt = attempt
        window = rec.window_seconds
        if rec.mode != self.mode or (window != self.window and abs(window - self.window) > TOLERANCE):
            raise _Bad("offer-terms", f"offer of {job.name} says {rec.mode}/{rec.window_seconds}s, contract says {self.mode}/{self.window}s")
        blocked = self._blocked.get((job.cls, job.gpu_type, job.regions, job.jurisdiction), _UNSET)  # ``_holder_blocked``'s cache
        if blocked is _UNSET:
            blocked = self._holder_blocked(job)
        if blocked is not None:
            raise _Bad("offer-terms", f"{job.name} offered to {self.holder} although {blocked} rules it out")
        c_price, c_cloud = rec.competing_price, rec.competing_cloud
        job.competing = _NO_COMPETITOR if c_price is None and c_cloud is None else (c_price, c_cloud)
        if self.mode == "match":
            quotes = job.quotes
            if not quotes:
                if c_price is not None or c_cloud is not None:
                    raise _Bad("offer-terms", f"offer of {job.name} names a competing quote that was never made")
                return
            named = [q for q in quotes if q[0] == c_cloud and q[2] == c_price]
            if not named:
                raise _Bad("offer-terms", f"offer of {job.name} names {c_cloud} at {c_price}, which is not among its quotes")
            if self.spill == "price-first" and c_price > min(q[2] for q in quotes):
                raise _Bad("offer-terms", f"offer of {job.name} names {c_cloud} at ${c_price}, not the best (lowest-price) quote")
            if self.spill == "start-first" and named[0][3] > min(q[3] for q in quotes):
                raise _Bad("offer-terms", f"offer of {job.name} names {c_cloud}, not the best (earliest-start) quote")
            if self.spill == "weighted":
                wp, ws = self.weights
                if min(wp * q[2] + ws * q[3] for q in named) > min(wp * q[2] + ws * q[3] for q in quotes) + TOLERANCE:
                    raise _Bad("offer-terms", f"offer of {job.name} names {c_cloud}, not the best (weighted) quote")

    def _on_answered(self, rec: Rec) -> None:
        """Rules 2-4: the current holder answers each attempt once, and truthfully."""
        job = self.jobs.get(rec.job)
        if job is None:
            raise _unknown(rec.job)
        attempt, answer, reason = rec.attempt, rec.answer, rec.reason
        if rec.holder != self.holder:
            raise _Bad("answer-not-holder", f"answer for {job.name} recorded from {rec.holder}, but the holder is {self.holder}")
        if job.answer_attempt == attempt and attempt == job.attempt:
            raise _Bad("attempt-order", f"second answer for {job.name} in attempt {attempt}")
        if answer == "not-offered":
            if job.offered_attempt == attempt:
                raise _Bad("attempt-order", f"{job.name} attempt {attempt} was offered, yet answered not-offered")
            if attempt != job.attempt:
                self._new_attempt(job, attempt, "answered")
            job.answer_attempt, job.answer, job.reason = attempt, answer, reason
            if not self._skip_reason_holds(job, reason):
                raise _Bad("rofr-skipped", f"holder not offered {job.name} for {reason!r}, which the catalog and contract do not support")
            return
        if job.offered_attempt != attempt or attempt != job.attempt:
            raise _Bad("offer-missing", f"{job.name} answered {answer} in attempt {attempt} without an offer in that attempt")
        job.answer_attempt, job.answer, job.reason = attempt, answer, reason
        expected, why, evidence = self._expected_answer(job, rec.at)
        if answer != expected or reason != why:
            raise _Bad("holder-answer", f"{self.holder} {answer} {reason} for {job.name}, but the records say {expected} {why} ({_evidence(evidence, job)})")
        want = self.window if answer == "lapsed" else self.backends[self.holder].response
        seconds = rec.response_seconds
        if seconds != want and abs(seconds - want) > TOLERANCE * (want if want > 1.0 else 1.0):
            raise _Bad("holder-answer", f"{answer} for {job.name} records a {rec.response_seconds:g}s response; the records say {want:g}s")

    def _on_placed(self, rec: Rec) -> None:
        """Rules 5 and 6."""
        job = self.jobs.get(rec.job)
        if job is None:
            raise _unknown(rec.job)
        attempt, cloud, via = rec.attempt, rec.cloud, rec.via
        key: Pool = (cloud, rec.region, rec.gpu_type)
        state = job.state
        if not ((state == "pending" or state == "queued") and job.answer_attempt == attempt == job.attempt and job.done_attempt != attempt):
            self._outcome(job, attempt, cloud)  # raises: ``_outcome``'s common case, inlined
        answer = job.answer
        if via == "preemption":
            if self._preempting != job.name:
                raise _Bad("preemption", f"{job.name} placed via preemption without its victims' evictions right before")
            self._preempting = None
            if cloud != self.holder or job.cls not in self.pins or not self.preemption:
                raise _Bad("preemption", f"preemption placement of {job.cls} job {job.name} on {cloud} (only pinned jobs, on the holder, when enabled)")
        elif cloud == self.holder:
            if via != "rofr-accepted" or answer != "accepted":
                raise _Bad("rofr-order", f"{job.name} placed on the holder via {via} after {answer} (needs an accepted offer)")
        else:
            if answer == "accepted":
                raise _Bad("rofr-order", f"{job.name} placed on {cloud} although {self.holder} accepted it in attempt {attempt}")
            if VIA_FOR_ANSWER.get(answer) != via:
                raise _Bad("rofr-order", f"{job.name} placed on {cloud} via {via} after the holder {answer}")
            if answer == "lapsed" and self.on_lapse == "queue":
                raise _Bad("rofr-order", f"{job.name} spilled to {cloud} after a lapse, but the contract queues on lapse")
        # Rule 6: the placement matches the job.
        pool = self.pools.get(key)
        if pool is None:
            raise _Bad("placement-mismatch", f"{job.name} placed on unknown pool {_fmt(key)}")
        if rec.gpus != job.gpus or rec.gpu_type != job.gpu_type or rec.cls != job.cls:
            raise _Bad(
                "placement-mismatch",
                f"{job.name} placed as {rec.gpus}x {rec.gpu_type} {rec.cls}, submitted as {job.gpus}x {job.gpu_type} {job.cls}",
            )
        pins = self.pins.get(job.cls)
        if pins is not None and cloud not in pins:
            raise _Bad("pinned-class-off-pins", f"{job.cls} job {job.name} placed on {cloud}, pinned to {list(pins)}")
        if job.clouds is not None and cloud not in job.clouds:  # ``_allowed``, its pins half checked just above
            raise _Bad("placement-mismatch", f"{job.name} placed on {cloud}, outside its clouds {list(job.clouds or ())}")
        if job.regions is not None and key[1] not in job.regions:
            raise _Bad("placement-mismatch", f"{job.name} placed in {key[1]}, outside its regions {list(job.regions)}")
        if job.jurisdiction is not None and pool.jurisdiction != job.jurisdiction:
            raise _Bad("placement-mismatch", f"{job.name} placed in {pool.jurisdiction}, its jurisdiction is {job.jurisdiction}")
        if not self.backends[cloud].up:
            raise _Bad("placement-mismatch", f"{job.name} placed on {cloud} while it was down")
        if pool.allocated + job.gpus > pool.capacity:
            raise _Bad("over-commit", f"{_fmt(key)} would hold {pool.allocated + job.gpus} GPUs of {pool.capacity}")
        pool.allocated += job.gpus
        job.state, job.pool, job.done_attempt, job.placed_attempt = "running", key, attempt, attempt
        job.placed_at = rec.at
        self.running_on.setdefault(key, {})[job.name] = job
        self.reservations.pop(job.name, None)

    def _outcome(self, job: _Job, attempt: int, cloud: str | None) -> None:
        """An attempt's one outcome (placed on ``cloud``, or queued: None) for a job awaiting it, after the holder's answer.

        The common case is one test; the wording of a violation is only built when there is one.
        """
        state = job.state
        if (state == "pending" or state == "queued") and job.answer_attempt == attempt == job.attempt and job.done_attempt != attempt:
            return
        what = "queued" if cloud is None else f"placed on {cloud}"
        unanswered_rule = "offer-missing" if cloud is None else "rofr-order"
        if job.state == "running":
            raise _Bad("double-placement", f"{job.name} {what} while already running on {_fmt(job.pool)}")
        if job.state not in ("pending", "queued"):
            raise _Bad("double-placement", f"{job.name} {what} after it was {job.state}")
        if job.answer_attempt != attempt or attempt != job.attempt:
            raise _Bad(unanswered_rule, f"{job.name} {what} in attempt {attempt} without a holder answer in that attempt")
        if job.done_attempt == attempt:
            raise _Bad("attempt-order", f"attempt {attempt} of {job.name} already had its outcome")

    def _on_queued(self, rec: Rec) -> None:
        job = self._job(rec.job)
        attempt = rec.attempt
        self._outcome(job, attempt, None)
        if job.answer == "accepted":
            raise _Bad("rofr-order", f"{job.name} queued although {self.holder} accepted it in attempt {attempt}")
        job.state, job.done_attempt = "queued", attempt

    def _leave(self, job: _Job, rec: Rec, what: str) -> _PoolState:
        if job.state != "running" or job.pool is None:
            raise _Bad("release-not-running", f"{job.name} {what} while {job.state}")
        key = (rec.cloud, rec.region, rec.gpu_type)
        if key != job.pool or rec.gpus != job.gpus:
            raise _Bad("release-not-running", f"{job.name} {what} from {_fmt(key)} x{rec.gpus}, it runs on {_fmt(job.pool)} x{job.gpus}")
        pool = self.pools[key]
        pool.allocated -= job.gpus
        del self.running_on[key][job.name]
        job.pool = None
        return pool

    def _on_preempted(self, rec: Rec) -> None:
        """Rule 7."""
        job = self._job(rec.job)
        reason, cloud = rec.reason, rec.cloud
        if reason == "pinned-job":
            by = rec.by
            winner = self.jobs.get(by) if isinstance(by, str) else None
            if winner is None:
                raise _Bad("preemption", f"{job.name} evicted for unknown job {by!r}")
            if not self.preemption:
                raise _Bad("preemption", f"{job.name} evicted for {by}, but the contract disables preemption")
            if cloud != self.holder:
                raise _Bad("preemption", f"{job.name} evicted for {by} on {cloud}, not on the holder")
            if job.cls in self.pins:
                raise _Bad("preemption", f"pinned {job.cls} job {job.name} evicted for {by}")
            if winner.cls not in self.pins:
                raise _Bad("preemption", f"{job.name} evicted for {by}, a {winner.cls} job (only pinned classes preempt)")
            if not job.priority < winner.priority:
                raise _Bad("preemption", f"priority-{job.priority} {job.name} evicted for priority-{winner.priority} {by}")
            if winner.state not in ("pending", "queued"):
                raise _Bad("preemption", f"{job.name} evicted for {by}, which is {winner.state}")
            self._leave(job, rec, "evicted")
            self._preempting = by
            self._plain = False
        elif reason == "backend-down":
            if cloud == self.holder:
                raise _Bad("eviction", f"{job.name} evicted from the holder {cloud} for an outage (holder outages never move work)")
            if self.backends.get(cloud) is None or self.backends[cloud].up:
                raise _Bad("eviction", f"{job.name} evicted for backend-down while {cloud} was up")
            self._leave(job, rec, "evicted")
        elif reason == "capacity-lost":
            key = (cloud, rec.region, rec.gpu_type)
            before = self._shrinking[1] if self._shrinking is not None else self.pools[key].allocated if key in self.pools else 0
            self._leave(job, rec, "evicted")
            self._shrinking = (key, before)
            self._plain = False
        else:
            raise _Bad("eviction", f"unknown eviction reason {reason!r}")
        job.state = "pending"

    def _on_released(self, rec: Rec) -> None:
        """Rule 8: only a running job is released, for one of the end reasons."""
        job = self.jobs.get(rec.job)
        if job is None:
            raise _unknown(rec.job)
        if rec.reason not in END_REASONS:
            raise _Bad("release-not-running", f"{job.name} released for {rec.reason!r} (finished, failed, stopped or cancelled)")
        key = (rec.cloud, rec.region, rec.gpu_type)
        if job.state == "running" and key == job.pool and rec.gpus == job.gpus:  # ``_leave``'s common case, inlined
            self.pools[key].allocated -= job.gpus
            del self.running_on[key][job.name]
            job.pool = None
        else:
            self._leave(job, rec, "released")
        job.state = rec.reason

    def _on_dequeued(self, rec: Rec) -> None:
        job = self._job(rec.job)
        if job.state != "queued" and job.state != "pending":  # pending: evicted, then refused by a reloaded contract
            raise _Bad("release-not-running", f"{job.name} dequeued while {job.state}")
        if rec.reason not in DEQUEUE_REASONS:
            raise _Bad("release-not-running", f"{job.name} dequeued for {rec.reason!r} (cancelled or stopped)")
        job.state = rec.reason
        self.reservations.pop(job.name, None)

    def _on_bound(self, rec: Rec) -> None:
        job = self._job(rec.job)
        if job.state != "running" or rec.attempt != job.placed_attempt:
            raise _Bad("attempt-order", f"{job.name} bound for attempt {rec.attempt}, but it is {job.state} (attempt {job.placed_attempt})")

    # ------------------------------------------------------------------ backends and pools

    def _on_backend_changed(self, rec: Rec) -> None:
        b = self.backends.get(rec.cloud)
        if b is None:
            raise _Bad("configuration", f"backend-changed for unknown cloud {rec.cloud!r}")
        b.up, b.response = rec.up, rec.latency_seconds

    def _on_capacity_changed(self, rec: Rec) -> None:
        key = (rec.cloud, rec.region, rec.gpu_type)
        pool = self.pools.get(key)
        if pool is None:
            raise _Bad("configuration", f"capacity-changed for unknown pool {_fmt(key)}")
        capacity = rec.capacity
        if capacity < 0:
            raise _Bad("malformed-record", f"negative capacity {capacity}")
        shrinking, self._shrinking = self._shrinking, None
        pool.set_capacity(capacity)
        if shrinking is not None and not capacity < shrinking[1]:
            raise _Bad("eviction", f"capacity-lost evictions on {_fmt(key)}, yet it shrank only to {capacity} of {shrinking[1]} allocated")
        if pool.allocated > capacity:
            raise _Bad("over-commit", f"{_fmt(key)} shrank to {capacity} with {pool.allocated} allocated")

    # ------------------------------------------------------------------ rule 9: reservations

    def _on_reserved(self, rec: Rec) -> None:
        """A queued job's planned start on a pool it may run on (it replaces the job's previous one)."""
        job = self._job(rec.job)
        key = (rec.cloud, rec.region, rec.gpu_type)
        if job.state != "queued":
            raise _Bad("reservation", f"{_fmt(key)} reserved for {job.name}, which is {job.state}")
        if key not in self.pools or not self._allowed(job, key[0]) or self.pools[key] not in self._candidates_on(job, key[0]):
            raise _Bad("reservation", f"{_fmt(key)} reserved for {job.name}, which cannot run there")
        if rec.start_at < rec.at:
            raise _Bad("reservation", f"{job.name} planned to start at t={rec.start_at:g}s, before the record's time t={rec.at:g}s")
        self.reservations[job.name] = (key, rec.start_at)

    def _on_reservation_cleared(self, rec: Rec) -> None:
        self.reservations.pop(rec.job, None)


def _ahead(a: _Job, b: _Job) -> bool:
    """Queue order: higher priority first, then earlier submission."""
    return a.priority > b.priority or (a.priority == b.priority and a.order < b.order)


OVERRUN_STEP_SECONDS = 600.0  # docs/queueing.md, "Overruns" (the engine's own copy is scheduler/core/profile.py)


def _expected_end(ends_at: float, now: float) -> float:
    if ends_at > now:
        return ends_at
    return ends_at + (int((now - ends_at) // OVERRUN_STEP_SECONDS) + 1) * OVERRUN_STEP_SECONDS


def _evidence(evidence: str | _PoolState, job: _Job) -> str:
    """``_expected_answer``'s evidence in words: a reason as given, or the pool that had room."""
    if isinstance(evidence, str):
        return evidence
    return f"{_fmt(evidence.key)} had {evidence.capacity - evidence.allocated} free for {job.gpus}"


def _fmt(key: Pool | None) -> str:
    return "nowhere" if key is None else f"{key[0]}/{key[1]}/{key[2]}"


_HANDLERS = {
    "configured": InvariantChecker._on_configured,
    "reconfigured": InvariantChecker._on_reconfigured,
    "submitted": InvariantChecker._on_submitted,
    "quoted": InvariantChecker._on_quoted,
    "offered": InvariantChecker._on_offered,
    "answered": InvariantChecker._on_answered,
    "placed": InvariantChecker._on_placed,
    "queued": InvariantChecker._on_queued,
    "preempted": InvariantChecker._on_preempted,
    "released": InvariantChecker._on_released,
    "dequeued": InvariantChecker._on_dequeued,
    "bound": InvariantChecker._on_bound,
    "backend-changed": InvariantChecker._on_backend_changed,
    "capacity-changed": InvariantChecker._on_capacity_changed,
    "reserved": InvariantChecker._on_reserved,
    "reservation-cleared": InvariantChecker._on_reservation_cleared,
}
