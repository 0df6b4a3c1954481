"""Engine-side value objects: small, frozen and cheap to create on the hot path."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
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
        first). A Job is made by ``new_job``.
        """
        s = doc.spec.__dict__
        w = s["workload"]
        regions, clouds = s["regions"], s["clouds"]
        return (new_job if cls is Job else cls)(
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
# Job's fields and their defaults, as ``new_job`` takes them (``...``: no default)
_NEW_JOB_FIELDS = [
    ("name", ...),
    ("cls", ...),
    ("gpus", ...),
    ("gpu_type", ...),
    ("priority", 0),
    ("duration_hours", 1.0),
    ("regions", None),
    ("clouds", None),
    ("jurisdiction", None),
    ("entrypoint", None),
    ("workload", None),
]
#: Job's slot setters in field order; None (``new_job`` then calls ``Job``) if Job's fields,
#: their order or defaults change, or it gains an ``__init__`` step (``__post_init__``).
_JOB_SETTERS: tuple[Any, ...] | None = (
    tuple(Job.__dict__[f.name].__set__ for f in fields(Job))
    if [(f.name, ... if f.default is MISSING else f.default) for f in fields(Job)] == _NEW_JOB_FIELDS
    and not hasattr(Job, "__post_init__")
    else None
)


def new_job(
    name: str,
    cls: str,
    gpus: int,
    gpu_type: str,
    priority: int = 0,
    duration_hours: float = 1.0,
    regions: tuple[str, ...] | None = None,
    clouds: tuple[str, ...] | None = None,
    jurisdiction: str | None = None,
    entrypoint: str | None = None,
    workload: dict[str, Any] | None = None,
) -> Job:
    """``Job(...)``, filled through its slots: the frozen dataclass's ``__init__`` pays
    ``object.__setattr__`` per field, twice what the slot setters cost (one Job per document
    of a ``plan`` and per arrival of a replay)."""
    setters = _JOB_SETTERS
    if setters is None:
        return Job(name, cls, gpus, gpu_type, priority, duration_hours, regions, clouds, jurisdiction, entrypoint, workload)
    s_name, s_cls, s_gpus, s_type, s_priority, s_hours, s_regions, s_clouds, s_jurisdiction, s_entrypoint, s_workload = setters
    job: Job = _new(Job)
    s_name(job, name)
    s_cls(job, cls)
    s_gpus(job, gpus)
    s_type(job, gpu_type)
    s_priority(job, priority)
    s_hours(job, duration_hours)
    s_regions(job, regions)
    s_clouds(job, clouds)
    s_jurisdiction(job, jurisdiction)
    s_entrypoint(job, entrypoint)
    s_workload(job, workload)
    return job
