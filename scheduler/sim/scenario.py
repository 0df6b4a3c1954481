"""``--scenario FILE``: scripted what-if events (outages, slowness, capacity) on the simulated clock.

The file is a ``kind: Scenario`` spec (``scheduler/specs.py``), validated like every spec
(``file:line: field: why``, exit 2, nothing written), then checked against the catalog:
every backend and pool it names must exist. Times are seconds from the trace's start on
the simulated clock (after ``--load`` compression of arrivals).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import SpecError, SpecErrors
from scheduler.io.documents import Document
from scheduler.loading import load_files
from scheduler.specs import CloudCatalog, Scenario, ScenarioEvent


@dataclass(frozen=True, slots=True)
class Action:
    """One scenario event as the simulator applies it, with a short label for plots."""

    at: float
    event: ScenarioEvent
    label: str


def label(ev: ScenarioEvent) -> str:
    if ev.backend is not None:
        parts = []
        if ev.up is not None:
            parts.append("up" if ev.up else "down")
        if ev.extraLatencySeconds is not None:
            parts.append(f"+{ev.extraLatencySeconds:g}s latency")
        return f"{ev.backend} {' '.join(parts)}"
    return f"{ev.cloud}/{ev.region}/{ev.gpuType} = {ev.capacity}"


def load_scenario(path: Path, catalog: CloudCatalog) -> tuple[str, list[Action]]:
    """Validate the file and its references to the catalog; returns (name, actions by time)."""
    loaded, errors = load_files([path])
    if errors:
        raise SpecErrors(errors)
    if len(loaded) != 1 or not isinstance(loaded[0].model, Scenario):
        kinds = ", ".join(x.kind for x in loaded) or "nothing"
        raise SpecError(str(path), f"expected exactly one Scenario document, found {kinds}", line=loaded[0].doc.line if loaded else None)
    item = loaded[0]
    model = item.model
    assert isinstance(model, Scenario)
    problems = check_scenario(model, item.doc, catalog)
    if problems:
        raise SpecErrors(problems)
    actions = sorted((Action(ev.at, ev, label(ev)) for ev in model.spec.events), key=lambda a: a.at)
    return model.metadata.name, actions


def check_scenario(model: Scenario, doc: Document, catalog: CloudCatalog) -> list[SpecError]:
    """Every backend, cloud, region and pool the scenario names that ``catalog`` lacks (``mcsched
    validate`` reports them too, so a file it passes is one ``simulate --scenario`` takes)."""
    problems: list[SpecError] = []
    clouds = {b.name: b for b in catalog.spec.backends}
    for i, ev in enumerate(model.spec.events):
        where = ("spec", "events", i)
        if ev.backend is not None:
            if ev.backend not in clouds:
                problems.append(
                    SpecError(doc.file, f"unknown backend {ev.backend!r} (catalog has {', '.join(clouds)})", line=doc.line_of((*where, "backend")), field=f"spec.events[{i}].backend")
                )
            continue
        backend = clouds.get(ev.cloud or "")
        if backend is None:
            problems.append(
                SpecError(doc.file, f"unknown cloud {ev.cloud!r} (catalog has {', '.join(clouds)})", line=doc.line_of((*where, "cloud")), field=f"spec.events[{i}].cloud")
            )
            continue
        region = next((r for r in backend.regions if r.name == ev.region), None)
        if region is None:
            names = ", ".join(r.name for r in backend.regions)
            problems.append(
                SpecError(doc.file, f"{ev.cloud} has no region {ev.region!r} (it has {names})", line=doc.line_of((*where, "region")), field=f"spec.events[{i}].region")
            )
        elif ev.gpuType not in region.gpus:
            problems.append(
                SpecError(
                    doc.file,
                    f"{ev.cloud}/{ev.region} has no {ev.gpuType} pool (it has {', '.join(region.gpus)})",
                    line=doc.line_of((*where, "gpuType")),
                    field=f"spec.events[{i}].gpuType",
                )
            )
    return problems
