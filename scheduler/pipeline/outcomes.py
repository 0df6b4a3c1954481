"""Every outcome a stage can report, as string enums.

They are ``str`` subclasses, so events carry them as plain JSON strings and the ledger's
checker compares them without importing the engine; code branches on the enum, never on
prose parsed back.
"""

from __future__ import annotations

from enum import StrEnum


class Answer(StrEnum):
    """The ROFR gate's outcome for one offer."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    LAPSED = "lapsed"
    NOT_OFFERED = "not-offered"


class AcceptReason(StrEnum):
    ACCEPTED = "accepted"
    MATCHED = "matched"  # match mode: the holder met a cheaper competing quote


class DeclineReason(StrEnum):
    NO_CAPACITY = "no-capacity"
    RESERVED_FOR_API_SERVING = "reserved-for-api-serving"  # the holder keeps a share of each pool for the API
    RESERVED_FOR_QUEUED_JOB = "reserved-for-queued-job"  # the only fitting pools are reserved for a higher-priority queued job
    GPU_TYPE_NOT_OFFERED = "gpu-type-not-offered"
    GANG_TOO_LARGE = "gang-too-large"
    BELOW_PRICE_FLOOR = "below-price-floor"
    CANNOT_MATCH_START = "cannot-match-start"
    CORDONED = "cordoned"  # the operator closed the holder to new placements (``mcsched drain``)
    AT_DISCRETION = "at-discretion"  # it could take the job, but declines this share of offers (holderRules.declineFraction)


class LapseReason(StrEnum):
    BACKEND_DOWN = "backend-down"
    NO_ANSWER_WITHIN_WINDOW = "no-answer-within-window"


class SkipReason(StrEnum):
    """Why the holder was not offered a job at all: static facts re-derivable from the catalog."""

    NOT_IN_PINS = "not-in-pins"
    GPU_TYPE_UNAVAILABLE = "gpu-type-unavailable"
    REGION_CONSTRAINT = "region-constraint"
    JURISDICTION = "jurisdiction"
    POLICY_IGNORES_CONTRACT = "policy-ignores-contract"  # simulator what-if baselines only


class QueueReason(StrEnum):
    PINNED_HOLDER_DECLINED = "pinned-holder-declined"
    PINNED_HOLDER_LAPSED = "pinned-holder-lapsed"
    HOLDER_LAPSED = "holder-lapsed"  # contract onLapse: queue
    NO_CAPACITY = "no-capacity"
    BACKEND_DOWN = "backend-down"


class Via(StrEnum):
    """How a placement came about (a metrics label and a ledger field)."""

    ROFR_ACCEPTED = "rofr-accepted"
    AFTER_DECLINE = "after-decline"
    AFTER_LAPSE = "after-lapse"
    HOLDER_NOT_OFFERED = "holder-not-offered"
    PREEMPTION = "preemption"


class EvictReason(StrEnum):
    PINNED_JOB = "pinned-job"  # preempted for a pinned (api-serving) job on the holder
    BACKEND_DOWN = "backend-down"  # a non-holder outage
    CAPACITY_LOST = "capacity-lost"  # the pool shrank (spot)
    DRAINED = "drained"  # its cloud was drained with the move policy (``mcsched drain CLOUD --move``)


class EndReason(StrEnum):
    """How a job left for good; each is also the job's final state."""

    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"  # `ray job stop` or its driver died
    CANCELLED = "cancelled"  # `mcsched cancel`


class JobState(StrEnum):
    PENDING = "pending"  # between submission (or eviction) and the next decision; never seen at rest
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.FINISHED, JobState.FAILED, JobState.STOPPED, JobState.CANCELLED})
