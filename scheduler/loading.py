"""Turn spec files into validated models, reporting every problem as ``file:line: field: why``.

Cross-document rules (a job naming an unknown region, an api-serving job asking for a
cloud outside its pins, a contract naming an unknown holder) live here too, because they
need the catalog and contract together and must fail before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scheduler.errors import SpecError, SpecErrors
from scheduler.specs import PATTERN_HELP, SPEC_KINDS, CloudCatalog, Contract, JobDoc, Strict
from scheduler.yamlio import Document, load_documents


@dataclass(frozen=True)
class Loaded:
    """A validated spec with the document it came from (for error positions)."""

    model: Strict
    doc: Document

    @property
    def kind(self) -> str:
        return type(self.model).__name__.replace("JobDoc", "Job")


def _field(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _reason(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "missing":
        return "required field is missing"
    if err.get("type") == "string_pattern_mismatch":
        pattern = str((err.get("ctx") or {}).get("pattern", ""))
        got = err.get("input")
        return f"{PATTERN_HELP.get(pattern, msg)} (got {got!r})"
    return msg


def validate_document(doc: Document) -> Loaded:
    """Validate one YAML document against the model its ``kind`` names."""
    data = doc.data
    if not isinstance(data, dict):
        raise SpecError(doc.file, f"expected a mapping with apiVersion/kind, got {type(data).__name__}", line=doc.line)
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in SPEC_KINDS:
        raise SpecError(
            doc.file,
            f"unknown kind {kind!r} (expected one of {', '.join(SPEC_KINDS)})",
            line=doc.line_of(("kind",)),
            field="kind",
        )
    try:
        model = SPEC_KINDS[kind].model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        raise SpecErrors(
            [
                SpecError(doc.file, _reason(dict(e)), line=doc.line_of(tuple(e["loc"])), field=_field(e["loc"]) or "kind")
                for e in errs
            ]
        ) from None
    return Loaded(model=model, doc=doc)


def load_files(paths: Iterable[str | Path]) -> tuple[list[Loaded], list[SpecError]]:
    """Load every document of every file; collect errors instead of stopping at the first."""
    loaded: list[Loaded] = []
    errors: list[SpecError] = []
    for path in paths:
        try:
            docs = load_documents(path)
        except SpecError as exc:
            errors.append(exc)
            continue
        if not docs:
            errors.append(SpecError(str(path), "no YAML documents in file"))
        for doc in docs:
            try:
                loaded.append(validate_document(doc))
            except SpecErrors as exc:
                errors.extend(exc.errors)
            except SpecError as exc:
                errors.append(exc)
    return loaded, errors


def _one(path: str | Path, kind: type[Strict]) -> Loaded:
    loaded, errors = load_files([path])
    if errors:
        raise SpecErrors(errors)
    found = [x for x in loaded if isinstance(x.model, kind)]
    if len(found) != 1 or len(loaded) != 1:
        name = "CloudCatalog" if kind is CloudCatalog else kind.__name__
        raise SpecError(str(path), f"expected exactly one {name} document, found {len(found)} of {len(loaded)}")
    return found[0]


def load_catalog(path: str | Path) -> CloudCatalog:
    model = _one(path, CloudCatalog).model
    assert isinstance(model, CloudCatalog)
    return model


def load_contract(path: str | Path, catalog: CloudCatalog) -> Contract:
    item = _one(path, Contract)
    assert isinstance(item.model, Contract)
    errors = check_contract(item.model, catalog, item.doc)
    if errors:
        raise SpecErrors(errors)
    return item.model


def check_contract(contract: Contract, catalog: CloudCatalog, doc: Document) -> list[SpecError]:
    known = catalog.backend_names
    errors: list[SpecError] = []
    holder = contract.spec.rofr.holder
    if holder not in known:
        errors.append(
            SpecError(
                doc.file,
                f"unknown holder {holder!r} (catalog has {', '.join(known)})",
                line=doc.line_of(("spec", "rofr", "holder")),
                field="spec.rofr.holder",
            )
        )
    for cls, clouds in contract.spec.pins.items():
        for i, cloud in enumerate(clouds):
            if cloud not in known:
                errors.append(
                    SpecError(
                        doc.file,
                        f"unknown cloud {cloud!r} (catalog has {', '.join(known)})",
                        line=doc.line_of(("spec", "pins", cls, i)),
                        field=f"spec.pins.{cls}[{i}]",
                    )
                )
    return errors


def check_job(job: JobDoc, catalog: CloudCatalog, contract: Contract, doc: Document) -> list[SpecError]:
    """Rules that need the catalog and contract: names, pins, the ROFR, feasibility."""
    s = job.spec
    errors: list[SpecError] = []

    def err(loc: tuple[str | int, ...], reason: str) -> None:
        errors.append(SpecError(doc.file, reason, line=doc.line_of(loc), field=_field(loc)))

    known = catalog.backend_names
    holder = contract.holder
    pins = contract.pinned_clouds(s.class_)
    for i, cloud in enumerate(s.clouds or []):
        if cloud not in known:
            err(("spec", "clouds", i), f"unknown cloud {cloud!r} (catalog has {', '.join(known)})")
        elif pins is not None and cloud not in pins:
            err(
                ("spec", "clouds", i),
                f"{s.class_} jobs are pinned to {', '.join(pins)} by the contract; {cloud!r} is not allowed",
            )
    if s.clouds and holder not in s.clouds and (pins is None or holder in pins):
        err(("spec", "clouds"), f"must include the ROFR holder {holder!r}: a job cannot waive the right of first refusal")
    all_regions = {r.name for b in catalog.spec.backends for r in b.regions}
    for i, region in enumerate(s.regions or []):
        if region not in all_regions:
            err(("spec", "regions", i), f"unknown region {region!r}")
    all_types = {t for b in catalog.spec.backends for r in b.regions for t in r.gpus}
    if s.gpuType not in all_types:
        err(("spec", "gpuType"), f"unknown GPU type {s.gpuType!r} (catalog has {', '.join(sorted(all_types))})")
    if errors:
        return errors
    allowed = set(pins if pins is not None else known) & set(s.clouds or known)
    best = 0
    for b in catalog.spec.backends:
        if b.name not in allowed:
            continue
        for r in b.regions:
            if s.regions and r.name not in s.regions:
                continue
            if s.jurisdiction and r.jurisdiction != s.jurisdiction:
                continue
            best = max(best, r.gpus.get(s.gpuType, 0))
    if best == 0:
        err(
            ("spec",), f"no allowed cloud/region offers {s.gpuType} under these constraints (clouds {', '.join(sorted(allowed))})"
        )
    elif s.serve is not None and s.serve.gpusPerReplica > best:  # each replica is its own placement
        err(("spec", "serve", "gpusPerReplica"), f"{s.serve.gpusPerReplica} GPUs can never fit: the largest allowed {s.gpuType} pool has {best}")
    elif s.serve is None and s.gpus > best:
        err(("spec", "gpus"), f"{s.gpus} GPUs can never fit: the largest allowed {s.gpuType} pool has {best}")
    elif allowed == {holder}:
        never = _holder_never_accepts(job, catalog, holder)
        if never:
            err(never[0], f"{s.class_} jobs run on {holder} only, and {holder} never accepts this job: {never[1]}")
    if s.serve is not None and len(f"{job.metadata.name}-r{s.serve.replicas.max}") > 63:
        err(("metadata", "name"), f"too long for a served model: replica jobs are named {job.metadata.name}-r<k> (at most 63 characters)")
    return errors


def _holder_never_accepts(job: JobDoc, catalog: CloudCatalog, holder: str) -> tuple[tuple[str | int, ...], str] | None:
    """A job only the holder may run that the holder's own rules always decline (field, why)."""
    s = job.spec
    backend = catalog.backend(holder)
    if backend is None:
        return None
    rules = backend.holderRules
    if s.gpuType in rules.declineGpuTypes:
        return ("spec", "gpuType"), f"its holder rules decline {s.gpuType} (declineGpuTypes)"
    gang, field = (s.serve.gpusPerReplica, ("spec", "serve", "gpusPerReplica")) if s.serve else (s.gpus, ("spec", "gpus"))
    if rules.maxGangGpus is not None and gang > rules.maxGangGpus:
        return field, f"its holder rules cap a gang at {rules.maxGangGpus} GPUs (maxGangGpus)"
    return None


def check_jobs(
    items: Iterable[Loaded], catalog: CloudCatalog, contract: Contract
) -> tuple[list[JobDoc], list[SpecError]]:
    """Cross-document job rules (duplicate names, catalog and contract checks) over loaded items."""
    seen: dict[str, str] = {}
    jobs: list[JobDoc] = []
    errors: list[SpecError] = []
    for item in items:
        if not isinstance(item.model, JobDoc):
            errors.append(SpecError(item.doc.file, f"expected kind Job, got {item.kind}", line=item.doc.line, field="kind"))
            continue
        name = item.model.metadata.name
        if name in seen:
            errors.append(
                SpecError(
                    item.doc.file,
                    f"duplicate job name {name!r} (first defined at {seen[name]})",
                    line=item.doc.line_of(("metadata", "name")),
                    field="metadata.name",
                )
            )
            continue
        seen[name] = f"{item.doc.file}:{item.doc.line}"
        errors.extend(check_job(item.model, catalog, contract, item.doc))
        jobs.append(item.model)
    return jobs, errors


def load_jobs(paths: Iterable[str | Path], catalog: CloudCatalog, contract: Contract) -> list[JobDoc]:
    """Load and check job files; all-or-nothing, duplicates across files are errors."""
    loaded, errors = load_files(paths)
    jobs, job_errors = check_jobs(loaded, catalog, contract)
    errors.extend(job_errors)
    if errors:
        raise SpecErrors(errors)
    return jobs
