"""Stage 1: admission, the static filters.

Everything here depends only on what cannot change while the engine runs (the catalog's
shape and pool sizes, the contract, the job), so the answer is cached per job signature and
a restored engine reaches the same answers as the live one. Whether a backend is up and how
much is free is checked per attempt, never here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.backends import BackendState
from scheduler.errors import AdmissionError
from scheduler.inventory import Inventory, Pool
from scheduler.model import Job
from scheduler.pipeline.outcomes import SkipReason


@dataclass(frozen=True, slots=True)
class Candidates:
    """Where one job signature may go.

    ``holder_pools`` are offered to the holder (even if too small: it declines); ``others``
    are the remaining allowed clouds with the pools that could ever hold the gang;
    ``excluded`` says why every other cloud is out.
    """

    holder_pools: tuple[Pool, ...]
    holder_skip: SkipReason | None
    others: tuple[tuple[str, tuple[Pool, ...]], ...]
    excluded: tuple[tuple[str, str], ...]
    locality: Mapping[str, int]
    pinned: bool
    pool_keys: frozenset[tuple[str, str, str]] = frozenset()  # every pool above: is a freed pool of use to this job?
    pools: tuple[Pool, ...] = ()  # every pool above, holder's first
    holder_keys: frozenset[tuple[str, str, str]] = frozenset()  # the keys of ``holder_pools``
    # what a placement the holder accepted did not use: every other cloud, not asked, and ``excluded``
    # (built once here: the most common explanation of all, the same for every job of a signature)
    accepted_not_used: tuple[tuple[str, str], ...] = ()


def admit(
    job: Job,
    inventory: Inventory,
    holder: str | None,
    pins: Mapping[str, tuple[str, ...]],
    backends: Mapping[str, BackendState],
) -> Candidates:
    """Static candidates for ``job``; ``holder=None`` means no ROFR (what-if baselines only).

    Raises ``AdmissionError`` for a job no allowed cloud can ever host, for a job that tries
    to waive the ROFR, and for a job pinned to the holder that the holder will never accept.
    """
    pinned_to = pins.get(job.cls)
    locality = {r: i for i, r in enumerate(job.regions)} if job.regions else {}
    holder_pools: tuple[Pool, ...] = ()
    holder_skip: SkipReason | None = None
    others: list[tuple[str, tuple[Pool, ...]]] = []
    excluded: list[tuple[str, str]] = []
    for cloud, pools in inventory.by_cloud.items():
        skip: SkipReason | None = None
        why = ""
        fit: list[Pool] = []
        if pinned_to is not None and cloud not in pinned_to:
            skip, why = SkipReason.NOT_IN_PINS, f"contract pins {job.cls} to {','.join(pinned_to)}"
        elif job.clouds is not None and cloud not in job.clouds:
            if cloud == holder:
                raise AdmissionError(
                    f"{job.name}: spec.clouds must include the ROFR holder {holder!r} (a job cannot waive the right of first refusal)"
                )
            why = "excluded by the job's clouds constraint"
        else:
            typed = [p for p in pools if p.gpu_type == job.gpu_type]
            in_region = [p for p in typed if not job.regions or p.region in locality]
            fit = [p for p in in_region if not job.jurisdiction or p.jurisdiction == job.jurisdiction]
            if not typed:
                skip, why = SkipReason.GPU_TYPE_UNAVAILABLE, f"gpu-type-unavailable: no {job.gpu_type}"
            elif not in_region:
                skip, why = SkipReason.REGION_CONSTRAINT, "region-constraint: none of " + ",".join(job.regions or ())
            elif not fit:
                skip, why = SkipReason.JURISDICTION, f"jurisdiction: no {job.gpu_type} region in {job.jurisdiction}"
            elif cloud != holder and max(p.ceiling for p in fit) < job.gpus:
                why = f"gang-too-large: largest {job.gpu_type} pool has {max(p.ceiling for p in fit)}"
        fit.sort(key=lambda p: (locality.get(p.region, 0), p.order))
        if cloud == holder:
            if skip is not None:
                holder_skip = skip
            else:
                holder_pools = tuple(fit)
        elif why:
            excluded.append((cloud, why))
        else:
            others.append((cloud, tuple(p for p in fit if p.ceiling >= job.gpus)))
    pinned = pinned_to is not None
    if holder is not None and not holder_skip and not others:
        never = _holder_never_accepts(job, holder_pools, backends[holder])
        if never:
            only = f"{job.cls} jobs run on {holder} only" if pinned else f"only {holder} could ever host it"
            raise AdmissionError(f"{job.name}: {only}, and {holder} never accepts this job: {never}")
    if not others and (not holder_pools or max(p.ceiling for p in holder_pools) < job.gpus):
        why = "; ".join(f"{c}: {w}" for c, w in ([(holder, holder_skip)] if holder_skip else []) + excluded)
        raise AdmissionError(
            f"{job.name}: no allowed cloud can ever host {job.gpus}x {job.gpu_type} ({why or 'no pool large enough'})"
        )
    every = holder_pools + tuple(p for _, pools in others for p in pools)
    not_asked = tuple((c, f"not asked: {holder} accepted") for c, _ in others)
    return Candidates(
        holder_pools,
        holder_skip,
        tuple(others),
        tuple(excluded),
        locality,
        pinned,
        frozenset(p.key for p in every),
        every,
        frozenset(p.key for p in holder_pools),
        not_asked + tuple(excluded),
    )


def _holder_never_accepts(job: Job, pools: tuple[Pool, ...], holder: BackendState) -> str:
    rules = holder.rules
    if job.gpu_type in rules.declineGpuTypes:
        return f"its holder rules decline {job.gpu_type} (declineGpuTypes)"
    if rules.maxGangGpus is not None and job.gpus > rules.maxGangGpus:
        return f"its holder rules cap a gang at {rules.maxGangGpus} GPUs (maxGangGpus)"
    largest = max((p.ceiling for p in pools), default=0)
    if largest < job.gpus:
        return f"its largest {job.gpu_type} pool allowed for this job has {largest} GPUs"
    return ""
