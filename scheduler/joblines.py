"""Plain Job lines of JSON Lines files decoded by msgspec straight into engine jobs (``mcsched plan``).

A 100k-job file read the general way decodes each line to a dict, validates it with the
pydantic models (``scheduler.specs``), then builds the engine's ``Job`` from the model: about
1.4 s of a 2-core machine's CPU before placement starts, a quarter of the whole plan. Here
msgspec decodes each line in C into typed structs that carry the same constraints as
``JobDoc`` (patterns, bounds, unknown fields refused), and the engine job is built from them.

This is a fast path, never a second judge: it accepts a subset of what ``JobDoc`` accepts
(no ``serve`` block, no escapes in the file, no key given twice), and on anything else —
an error, an unusual document, a rule verdict not seen before that fails — it returns None
and the caller loads the files the general way, whose errors name file, line, field and
reason. The cross-document rules are the loader's own (``JobRules``): a job whose rule
verdict is not cached yet is validated by pydantic and checked by ``check_job``.
``tests/test_joblines.py`` holds it to the general path, job for job.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from pydantic import ValidationError

from scheduler.errors import SpecError
from scheduler.io.documents import JSON_LINES_SUFFIXES, MAX_DOCUMENTS, Document, Progress, read_bytes
from scheduler.model import Job
from scheduler.specs import (
    GPU_TYPE_PATTERN,
    JURISDICTION_PATTERN,
    MAX_GANG_GPUS,
    NAME_PATTERN,
    REGION_PATTERN,
    CloudCatalog,
    Contract,
    JobDoc,
    JobSpec,
    Workload,
)

# The constraints of the fields of ``scheduler.specs`` (a test compares the field names).
_Name = Annotated[str, Meta(pattern=NAME_PATTERN, max_length=63)]
_Region = Annotated[str, Meta(pattern=REGION_PATTERN, max_length=63)]


class _Metadata(Struct, forbid_unknown_fields=True):
    name: _Name
    labels: dict[str, str] | UnsetType = UNSET


class _Workload(Struct, forbid_unknown_fields=True):
    steps: Annotated[int, Meta(ge=1, le=1_000_000)] | UnsetType = UNSET
    stepSeconds: Annotated[float, Meta(ge=0.0, le=3600.0)] | UnsetType = UNSET
    checkpointEvery: Annotated[int, Meta(ge=1, le=1_000_000)] | UnsetType = UNSET
    failAtStep: Annotated[int, Meta(ge=1)] | UnsetType | None = UNSET


class _Spec(Struct, forbid_unknown_fields=True, rename={"class_": "class"}):
    class_: Literal["training", "inference", "api-serving"]
    gpus: Annotated[int, Meta(ge=1, le=MAX_GANG_GPUS)]
    gpuType: Annotated[str, Meta(pattern=GPU_TYPE_PATTERN)]
    regions: Annotated[list[_Region], Meta(min_length=1)] | UnsetType | None = UNSET
    clouds: Annotated[list[_Name], Meta(min_length=1)] | UnsetType | None = UNSET
    jurisdiction: Annotated[str, Meta(pattern=JURISDICTION_PATTERN)] | UnsetType | None = UNSET
    priority: Annotated[int, Meta(ge=-1000, le=1000)] | UnsetType = UNSET
    durationHours: Annotated[float, Meta(gt=0.0, le=8760.0)] | UnsetType = UNSET
    entrypoint: Annotated[str, Meta(min_length=1, max_length=8192)] | UnsetType | None = UNSET
    workload: _Workload | UnsetType | None = UNSET
    terminationGracePeriodSeconds: Annotated[float, Meta(ge=0.0, le=3600.0)] | UnsetType | None = UNSET


class _JobLine(Struct, forbid_unknown_fields=True):
    apiVersion: Literal["mcsched.io/v1"]
    kind: Literal["Job"]
    metadata: _Metadata
    spec: _Spec


#: The models' defaults, for the fields a line leaves out.
_SPEC_DEFAULTS = {name: f.default for name, f in JobSpec.model_fields.items()}
_WORKLOAD_DEFAULTS = {name: f.default for name, f in Workload.model_fields.items()}

_decode = msgspec.json.Decoder(_JobLine).decode
# Absent fields stay UNSET and are not encoded again: a line's colons are its keys (see ``_jobs_of``).
_encode = msgspec.json.Encoder().encode


def is_plain_jsonl(paths: Iterable[str | Path]) -> bool:
    return all(Path(p).suffix.lower() in JSON_LINES_SUFFIXES for p in paths)


def load_engine_jobs(
    paths: Iterable[str | Path], catalog: CloudCatalog, contract: Contract, progress: Progress | None = None
) -> list[Job] | None:
    """The engine jobs of plain JSON Lines job files, in order, checked as ``load_jobs`` checks
    them; None when any document needs the general path (an error, a served model, an escape)."""
    from scheduler.loading import JobRules, check_job, verdict_key

    rules = JobRules(catalog, contract)
    names: set[str] = set()
    jobs: list[Job] = []
    for path in paths:
        try:
            raw = read_bytes(path)
        except SpecError:
            return None
        if b"\\" in raw:  # an escape may hide a newline from a pattern's ``$`` or a colon from the key count
            return None
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                doc = _decode(line)
            except (msgspec.ValidationError, msgspec.DecodeError):
                return None
            # A key given twice leaves one field and one colon fewer when encoded again.
            if line.count(b":") != _encode(doc).count(b":"):
                return None
            spec = doc.spec
            if (
                spec.entrypoint is not None
                and spec.entrypoint is not UNSET
                and spec.workload is not None
                and spec.workload is not UNSET
            ):
                return None  # "set either entrypoint or workload": the general path says so
            name = doc.metadata.name
            if name in names or len(jobs) >= MAX_DOCUMENTS:
                return None
            names.add(name)
            clouds = tuple(spec.clouds) if spec.clouds else None
            regions = tuple(spec.regions) if spec.regions else None
            jurisdiction = spec.jurisdiction if isinstance(spec.jurisdiction, str) else None
            if verdict_key(spec.class_, spec.gpuType, spec.gpus, jurisdiction, clouds, regions) not in rules.clean:
                # First job of this shape: the loader's own rules decide, on the pydantic model.
                try:
                    model = JobDoc.model_validate(msgspec.json.decode(line))
                except ValidationError:
                    return None
                if check_job(model, catalog, contract, Document(str(path), None, number), rules):
                    return None
            w = spec.workload
            jobs.append(
                Job(
                    name,
                    spec.class_,
                    spec.gpus,
                    spec.gpuType,
                    _SPEC_DEFAULTS["priority"] if spec.priority is UNSET else spec.priority,
                    _SPEC_DEFAULTS["durationHours"] if spec.durationHours is UNSET else spec.durationHours,
                    regions,
                    clouds,
                    jurisdiction,
                    spec.entrypoint if isinstance(spec.entrypoint, str) else None,
                    _workload(w) if isinstance(w, _Workload) else None,
                )
            )
            if progress is not None:
                progress("reading", number, len(lines))
    return jobs


def _workload(w: _Workload) -> dict[str, Any]:
    """``Workload.model_dump()`` of the same workload: every field, defaults filled in, in order."""
    return {name: default if getattr(w, name) is UNSET else getattr(w, name) for name, default in _WORKLOAD_DEFAULTS.items()}
