"""Engine-side value objects: small, frozen and cheap to create on the hot path."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from scheduler.specs import JobDoc


@dataclass(frozen=True, slots=True)
class Job:
    """One gang request as the engine sees it (already validated)."""

    name: str
    cls: str
    gpus: int
    gpu_type: str
    priority: int = 0
    duration_hours: float = 1.0
    regions: tuple[str, ...] | None = None
    clouds: tuple[str, ...] | None = None
    jurisdiction: str | None = None
    entrypoint: str | None = None
    workload: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    @classmethod
    def from_doc(cls, doc: JobDoc) -> Job:
        """The engine's job for a validated Job document (one per document on a plan's hot path).

        ``workload`` is the Workload's fields as a dict, what ``model_dump()`` gives for its
        plain scalar fields. The spec's fields are read from its ``__dict__``, where a pydantic
        model keeps them (each attribute read of a model goes through its ``__getattr__`` hook
        first). A Job is filled through its slots, as its ``__init__`` would: the frozen
        dataclass's ``__init__`` pays ``object.__setattr__`` per field.
        """
        s = doc.spec.__dict__
        w = s["workload"]
        regions, clouds = s["regions"], s["clouds"]
        if cls is not Job or _JOB_SETTERS is None:
            return cls(
                doc.metadata.name,
                s["class_"],
                s["gpus"],
                s["gpuType"],
                s["priority"],
                s["durationHours"],
                tuple(regions) if regions else None,
                tuple(clouds) if clouds else None,
                s["jurisdiction"],
                s["entrypoint"],
                dict(w.__dict__) if w is not None else None,
            )
        name, cls_, gpus, gpu_type, priority, hours, in_regions, in_clouds, jurisdiction, entrypoint, workload = _JOB_SETTERS
        job = _new(Job)
        name(job, doc.metadata.name)
        cls_(job, s["class_"])
        gpus(job, s["gpus"])
        gpu_type(job, s["gpuType"])
        priority(job, s["priority"])
        hours(job, s["durationHours"])
        in_regions(job, tuple(regions) if regions else None)
        in_clouds(job, tuple(clouds) if clouds else None)
        jurisdiction(job, s["jurisdiction"])
        entrypoint(job, s["entrypoint"])
        workload(job, dict(w.__dict__) if w is not None else None)
        return job

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cls": self.cls,
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "priority": self.priority,
            "duration_hours": self.duration_hours,
            "regions": list(self.regions) if self.regions else None,
            "clouds": list(self.clouds) if self.clouds else None,
            "jurisdiction": self.jurisdiction,
            "entrypoint": self.entrypoint,
            "workload": self.workload,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(
            name=d["name"],
            cls=d["cls"],
            gpus=int(d["gpus"]),
            gpu_type=d["gpu_type"],
            priority=int(d.get("priority", 0)),
            duration_hours=float(d.get("duration_hours", 1.0)),
            regions=tuple(d["regions"]) if d.get("regions") else None,
            clouds=tuple(d["clouds"]) if d.get("clouds") else None,
            jurisdiction=d.get("jurisdiction"),
            entrypoint=d.get("entrypoint"),
            workload=d.get("workload"),
        )

    @property
    def signature(self) -> tuple[Any, ...]:
        """Jobs with equal signatures are interchangeable for feasibility (queue buckets)."""
        return (self.cls, self.gpu_type, self.gpus, self.regions, self.clouds, self.jurisdiction)


_new = object.__new__
_FROM_DOC_ORDER = [
    "name",
    "cls",
    "gpus",
    "gpu_type",
    "priority",
    "duration_hours",
    "regions",
    "clouds",
    "jurisdiction",
    "entrypoint",
]
#: The slot setters of Job's fields in ``from_doc``'s order; None (use ``__init__``) if Job
#: gains or reorders a field, or an ``__init__`` step (``__post_init__``).
_JOB_SETTERS: tuple[Any, ...] | None = (
    tuple(Job.__dict__[f.name].__set__ for f in fields(Job))
    if [f.name for f in fields(Job)] == [*_FROM_DOC_ORDER, "workload"] and not hasattr(Job, "__post_init__")
    else None
)
