"""Engine-side value objects: small, frozen and cheap to create on the hot path."""

from __future__ import annotations

from dataclasses import dataclass, field
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
        """The engine's job for a validated Job document."""
        spec = doc.spec
        w = spec.workload
        return cls(
            doc.metadata.name,
            spec.class_,
            spec.gpus,
            spec.gpuType,
            spec.priority,
            spec.durationHours,
            tuple(spec.regions) if spec.regions else None,
            tuple(spec.clouds) if spec.clouds else None,
            spec.jurisdiction,
            spec.entrypoint,
            w.model_dump() if w is not None else None,
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
