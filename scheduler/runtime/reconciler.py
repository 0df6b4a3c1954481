"""Books versus reality: the engine's allocations (desired) against Ray's placement groups (actual).

The comparison is pure (no Ray): ``compare`` takes the engine's assignments, the gangs Ray
reports and the drivers' leases and returns a ``Plan`` - the drift per pool and the repairs
to make. ``read_gangs`` (in ``actor.py``, where Ray is applied) feeds it from the GCS every
second; the service carries out the plan. This is the KubeRay-operator pattern: a level-
triggered loop that converges the actual state on the desired one, so a lost message (a
driver killed with ``kill -9``, an actor restart in the middle of a move) is repaired on the
next tick instead of leaving a ghost.

Repairs are deliberately narrow:
- a gang named by mcsched (``gang_name``) whose job no longer holds that placement attempt
  (evicted, moved, ended) is removed: Ray then kills whatever still runs inside it;
- a job whose driver stopped renewing its lease *and* whose gang is gone is ended as
  ``stopped`` (running: released; queued: dequeued), so no ghost holds or waits for capacity.
A job without a lease (placed through the actor API with no driver) is never ended here.

Foreign gangs - placement groups on a pool's resources that mcsched did not create (someone
holding the cluster token called ``placement_group`` directly) - hold real capacity behind
the books' back: they are counted in the drift and listed in ``Plan.foreign``; the service
reports them (with their creator) and, when the operator chose ``foreignGroups: evict``,
removes them. Serve's own groups for mcsched's replicas (``SERVE_REPLICA::mcsched-...``)
are mcsched's, not foreign.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.runtime.resources import pool_resource

GANG_PREFIX = "mcsched:"
#: Placement groups Ray Serve makes for mcsched's replica applications (``mcsched-<job>-r<k>``).
SERVE_GANG_PREFIX = "SERVE_REPLICA::mcsched-"
FOREIGN_POLICIES = ("report", "evict")
HOLDING_STATES = frozenset({"CREATED"})  # a gang holds its resources only once created
LIVE_STATES = frozenset({"CREATED", "PENDING", "RESCHEDULING"})

PoolKey = tuple[str, str, str]  # (cloud, region, gpu_type)


def gang_name(job: str, attempt: int) -> str:
    """The placement group name of one placement attempt: the reconciler reads job and attempt back."""
    return f"{GANG_PREFIX}{job}:{attempt}"


def parse_gang_name(name: str) -> tuple[str, int] | None:
    if not name.startswith(GANG_PREFIX):
        return None
    job, _, attempt = name[len(GANG_PREFIX) :].rpartition(":")
    return (job, int(attempt)) if job and attempt.isdigit() else None


@dataclass(frozen=True, slots=True)
class Gang:
    """One Ray placement group as the GCS reports it (``resources`` summed over its bundles)."""

    pg_id: str
    name: str
    state: str
    resources: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Assignment:
    """One job as the engine's books have it: ``pool`` is set while it is placed (running)."""

    job: str
    attempt: int
    state: str  # running | queued
    pool: PoolKey | None = None
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    drift: dict[PoolKey, int]  # books' allocation minus the GPUs Ray's created gangs hold there
    remove: tuple[Gang, ...] = ()  # mcsched gangs of a placement the books no longer have
    end: tuple[str, ...] = ()  # leased jobs whose driver and gang are both gone
    held: dict[PoolKey, int] = field(default_factory=dict)
    foreign: tuple[Gang, ...] = ()  # live gangs on pool resources that mcsched did not create

    @property
    def at_rest(self) -> bool:
        return not self.remove and not self.end and not self.foreign and not any(self.drift.values())


def compare(
    pools: Mapping[PoolKey, int],
    assignments: Iterable[Assignment],
    gangs: Iterable[Gang],
    leases: Mapping[str, float],
    now: float,
    grace: float,
) -> Plan:
    """Numbered like the loop it drives.

    1. actual: GPUs each pool's Ray resource is held by, over created gangs (any owner);
    2. drift: books' allocation minus actual, for every pool (0 at rest);
    3. stale gangs: an mcsched gang whose (job, attempt) is not a current placement;
    4. ghosts: a leased job whose lease expired (no driver renewed it within ``grace``) and
       whose current placement has no live gang;
    5. foreign gangs: live gangs on a pool's resource that are neither mcsched's nor Serve's for mcsched.
    """
    gangs = list(gangs)
    by_resource = {pool_resource(*key): key for key in pools}
    # 1. actual
    held: dict[PoolKey, int] = dict.fromkeys(pools, 0)
    for g in gangs:
        if g.state not in HOLDING_STATES:
            continue
        for resource, amount in g.resources.items():
            key = by_resource.get(resource)
            if key is not None:
                held[key] += round(amount)
    # 2. drift
    current: dict[str, Assignment] = {a.job: a for a in assignments}
    drift = {key: allocated - held[key] for key, allocated in pools.items()}
    # 3. stale gangs
    live: set[tuple[str, int]] = set()
    remove: list[Gang] = []
    for g in gangs:
        if g.state not in LIVE_STATES:
            continue
        parsed = parse_gang_name(g.name)
        if parsed is None:
            continue
        a = current.get(parsed[0])
        if a is None or a.state != "running" or a.attempt != parsed[1]:
            remove.append(g)
        else:
            live.add(parsed)
    # 4. ghosts
    end = [
        job
        for job, renewed in leases.items()
        if now - renewed > grace
        and (a := current.get(job)) is not None
        and (a.state == "queued" or (a.job, a.attempt) not in live)
    ]
    # 5. foreign gangs
    foreign = tuple(
        g for g in gangs
        if g.state in LIVE_STATES and parse_gang_name(g.name) is None and not g.name.startswith(SERVE_GANG_PREFIX)
        and any(resource in by_resource for resource in g.resources)
    )  # fmt: skip
    return Plan(drift, tuple(remove), tuple(sorted(end)), held, foreign=foreign)


class EnforcementTimer:
    """How long Ray took to carry out a decision, per action (``mcsched_enforcement_seconds``).

    Fed the live event stream (decision times) and the runtime's reports (the victim's work
    stopped, a gang's work running); returns the observations to record. Keyed by job and
    placement attempt, so a report for an old attempt never closes a newer decision.
    """

    VICTIM_STOPPED = "victim-stopped"
    PREEMPTOR_RUNNING = "preemptor-running"
    MOVED_RUNNING = "moved-running"

    def __init__(self) -> None:
        self._evicted: dict[str, float] = {}  # job -> when its running placement was taken away
        self._moved: set[str] = set()  # jobs evicted at least once (their next placement is a move)
        self._starting: dict[tuple[str, int], tuple[str, float]] = {}  # (job, attempt) -> (action, decided at)

    def evicted(self, job: str, at: float) -> None:
        self._evicted.setdefault(job, at)
        self._moved.add(job)

    def placed(self, job: str, attempt: int, via: str, at: float) -> None:
        if via == "preemption":
            self._starting[(job, attempt)] = (self.PREEMPTOR_RUNNING, at)
        elif job in self._moved:
            self._starting[(job, attempt)] = (self.MOVED_RUNNING, at)

    def ended(self, job: str) -> None:
        self._moved.discard(job)
        for key in [k for k in self._starting if k[0] == job]:
            del self._starting[key]

    def stopped(self, job: str, now: float) -> tuple[str, float] | None:
        at = self._evicted.pop(job, None)
        return None if at is None else (self.VICTIM_STOPPED, max(now - at, 0.0))

    def reserved(self, job: str, attempt: int, now: float) -> tuple[str, float] | None:
        """The gang is granted (Ray handed over the resources); the work has not started yet."""
        started = self._starting.get((job, attempt))
        return None if started is None else (started[0].replace("-running", "-reserved"), max(now - started[1], 0.0))

    def running(self, job: str, attempt: int, now: float) -> tuple[str, float] | None:
        started = self._starting.pop((job, attempt), None)
        return None if started is None else (started[0], max(now - started[1], 0.0))
