"""Turn spec files into validated models, reporting every problem as ``file:line: field: why``.

Files are read by ``scheduler.io`` (YAML or JSON Lines); an error's field line is found when
the error is printed (``FieldError``), so a file with thousands of bad documents costs no more
to check than a good one.

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
from scheduler.io import Document, Progress, load_documents
from scheduler.io.documents import FieldError, is_json_lines
from scheduler.specs import PATTERN_HELP, SPEC_KINDS, CloudCatalog, Contract, JobDoc, Strict


@dataclass(frozen=True, slots=True)
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
    """Validate one document (YAML or JSON Lines) against the model its ``kind`` names."""
    data = doc.data
    if data is None:
        raise SpecError(doc.file, "empty document (a spec is a mapping with apiVersion, kind, metadata and spec)", line=doc.line)
    if not isinstance(data, dict):
        shape = "a list" if isinstance(data, list) else "a string" if isinstance(data, str) else f"a {type(data).__name__}"
        raise SpecError(doc.file, f"expected a mapping with apiVersion, kind, metadata and spec, got {shape}", line=doc.line)
    kind = data.get("kind")
    if kind is None:
        raise FieldError(doc, ("kind",), f"required field is missing (one of {', '.join(SPEC_KINDS)})", "kind")
    if not isinstance(kind, str) or kind not in SPEC_KINDS:
        raise FieldError(doc, ("kind",), f"unknown kind {kind!r} (expected one of {', '.join(SPEC_KINDS)})", "kind")
    try:
        # ``model_validate(data)`` is exactly this call (its other arguments are None, the
        # validator's defaults) after a Python frame that parses six keyword arguments per document.
        model = SPEC_KINDS[kind].__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        errs = exc.errors()
        raise SpecErrors([FieldError(doc, tuple(e["loc"]), _reason(dict(e)), _field(e["loc"]) or "kind") for e in errs]) from None
    return Loaded(model, doc)


def load_files(paths: Iterable[str | Path], progress: Progress | None = None) -> tuple[list[Loaded], list[SpecError]]:
    """Load every document of every file; collect errors instead of stopping at the first.

    ``progress(stage, done, total)`` hears of every document read and validated.
    """
    loaded: list[Loaded] = []
    errors: list[SpecError] = []
    for path in paths:
        try:
            docs = load_documents(path, progress)
        except SpecError as exc:
            errors.append(exc)
            continue
        if not docs:
            errors.append(SpecError(str(path), f"no {'JSON Lines' if is_json_lines(path) else 'YAML'} documents in file"))
        for i, doc in enumerate(docs, 1):
            try:
                loaded.append(validate_document(doc))
            except SpecErrors as exc:
                errors.extend(exc.errors)
            except SpecError as exc:
                errors.append(exc)
            if progress is not None:
                progress("validating", i, len(docs))
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
        errors.append(FieldError(doc, ("spec", "rofr", "holder"), f"unknown holder {holder!r} (catalog has {', '.join(known)})", "spec.rofr.holder"))
    raw = doc.data.get("spec") if isinstance(doc.data, dict) else None
    written = isinstance(raw, dict) and "pins" in raw  # pins not written derive from the holder: its error is the one to report
    for cls, clouds in contract.spec.pins.items() if written else ():
        for i, cloud in enumerate(clouds):
            if cloud not in known:
                errors.append(
                    FieldError(doc, ("spec", "pins", cls, i), f"unknown cloud {cloud!r} (catalog has {', '.join(known)})", f"spec.pins.{cls}[{i}]")
                )
    return errors


class JobRules:
    """What the cross-document job rules need from a catalog and contract, derived once.

    Checking a 100k-job file asks the same questions of the same catalog 100k times: the
    known clouds, regions and GPU types are sets built here once, the largest pool a job's
    constraints allow is memoized per distinct constraint set, and so is a clean verdict
    (``clean``: the constraints of a job without ``serve`` that passed every rule; only a
    problem needs its document for a line number).
    """

    def __init__(self, catalog: CloudCatalog, contract: Contract) -> None:
        self.catalog = catalog
        self.known = catalog.backend_names
        self.known_list = ", ".join(self.known)
        self.holder = contract.holder
        self.pins = {cls: contract.pinned_clouds(cls) for cls in ("training", "inference", "api-serving")}
        self.regions = {r.name for b in catalog.spec.backends for r in b.regions}
        self.gpu_types = {t for b in catalog.spec.backends for r in b.regions for t in r.gpus}
        self.gpu_types_list = ", ".join(sorted(self.gpu_types))
        self._largest: dict[tuple[Any, ...], tuple[int, list[str], dict[str, int]]] = {}
        self.clean: set[tuple[Any, ...]] = set()

    def largest_pool(
        self, cls: str, clouds: Sequence[str] | None, regions: Sequence[str] | None, jurisdiction: str | None, gpu_type: str
    ) -> tuple[int, list[str], dict[str, int]]:
        """(GPUs of the largest allowed pool of ``gpu_type``, the allowed clouds, the largest per cloud)."""
        key = (cls, tuple(clouds or ()), tuple(regions or ()), jurisdiction, gpu_type)
        hit = self._largest.get(key)
        if hit is None:
            pins = self.pins.get(cls)
            allowed = set(pins if pins is not None else self.known) & set(clouds or self.known)
            per_cloud: dict[str, int] = {}
            for b in self.catalog.spec.backends:
                if b.name not in allowed:
                    continue
                for r in b.regions:
                    if regions and r.name not in regions:
                        continue
                    if jurisdiction and r.jurisdiction != jurisdiction:
                        continue
                    per_cloud[b.name] = max(per_cloud.get(b.name, 0), r.gpus.get(gpu_type, 0))
            hit = self._largest[key] = (max(per_cloud.values(), default=0), sorted(allowed), per_cloud)
        return hit


def verdict_key(
    cls: str, gpu_type: str, gpus: int, jurisdiction: str | None, clouds: Sequence[str] | None, regions: Sequence[str] | None
) -> tuple[Any, ...]:
    """What every rule of ``check_job`` reads of a job without ``serve``: equal keys, equal verdicts."""
    return (cls, gpu_type, gpus, jurisdiction, tuple(clouds or ()), tuple(regions or ()))


def check_job(
    job: JobDoc, catalog: CloudCatalog, contract: Contract, doc: Document, rules: JobRules | None = None
) -> list[SpecError]:
    """Rules that need the catalog and contract: names, pins, the ROFR, feasibility."""
    r = rules or JobRules(catalog, contract)
    s = job.spec
    # Every rule below reads only these fields (and, for a served model, its serve block and name).
    verdict = verdict_key(s.class_, s.gpuType, s.gpus, s.jurisdiction, s.clouds, s.regions) if s.serve is None else None
    if verdict is not None and verdict in r.clean:
        return []
    errors: list[SpecError] = []

    def err(loc: tuple[str | int, ...], reason: str) -> None:
        errors.append(FieldError(doc, loc, reason, _field(loc)))

    pins = r.pins.get(s.class_)
    for i, cloud in enumerate(s.clouds or []):
        if cloud not in r.known:
            err(("spec", "clouds", i), f"unknown cloud {cloud!r} (catalog has {r.known_list})")
        elif pins is not None and cloud not in pins:
            err(
                ("spec", "clouds", i),
                f"{s.class_} jobs are pinned to {', '.join(pins)} by the contract; {cloud!r} is not allowed",
            )
    if s.clouds and r.holder not in s.clouds and (pins is None or r.holder in pins):
        err(("spec", "clouds"), f"must include the ROFR holder {r.holder!r}: a job cannot waive the right of first refusal")
    for i, region in enumerate(s.regions or []):
        if region not in r.regions:
            err(("spec", "regions", i), f"unknown region {region!r}")
    if s.gpuType not in r.gpu_types:
        err(("spec", "gpuType"), f"unknown GPU type {s.gpuType!r} (catalog has {r.gpu_types_list})")
    if errors:
        return errors
    best, allowed, per_cloud = r.largest_pool(s.class_, s.clouds, s.regions, s.jurisdiction, s.gpuType)
    gang = s.serve.gpusPerReplica if s.serve is not None else s.gpus
    hosts = [cloud for cloud, most in per_cloud.items() if most >= gang]
    if best == 0:
        given = [f"{name} {value}" for name, value in (("jurisdiction", s.jurisdiction), ("regions", ",".join(s.regions or [])), ("clouds", ",".join(s.clouds or []))) if value]
        limits = f" with {'; '.join(given)}" if given else ""
        err(("spec",), f"no allowed cloud/region offers {s.gpuType}{limits} (clouds allowed for {s.class_}: {', '.join(allowed)})")
    elif s.serve is not None and s.serve.gpusPerReplica > best:  # each replica is its own placement
        err(("spec", "serve", "gpusPerReplica"), f"{s.serve.gpusPerReplica} GPUs can never fit: the largest allowed {s.gpuType} pool has {best}")
    elif s.serve is None and s.gpus > best:
        err(("spec", "gpus"), f"{s.gpus} GPUs can never fit: the largest allowed {s.gpuType} pool has {best}")
    elif hosts == [r.holder]:
        never = _holder_never_accepts(job, catalog, r.holder)
        if never:
            only = f"{s.class_} jobs run on {r.holder} only" if allowed == [r.holder] else f"only {r.holder} could ever host it"
            err(never[0], f"{only}, and {r.holder} never accepts this job: {never[1]}")
    if s.serve is not None and len(f"{job.metadata.name}-r{s.serve.replicas.max}") > 63:
        err(("metadata", "name"), f"too long for a served model: replica jobs are named {job.metadata.name}-r<k> (at most 63 characters)")
    if verdict is not None and not errors:
        r.clean.add(verdict)
    return errors


def _holder_never_accepts(job: JobDoc, catalog: CloudCatalog, holder: str) -> tuple[tuple[str | int, ...], str] | None:
    """A job only the holder can run that the holder's own rules always decline (field, why)."""
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
    rules = JobRules(catalog, contract)
    seen: dict[str, Document] = {}
    jobs: list[JobDoc] = []
    errors: list[SpecError] = []
    for item in items:
        if not isinstance(item.model, JobDoc):
            errors.append(SpecError(item.doc.file, f"expected kind Job, got {item.kind}", line=item.doc.line, field="kind"))
            continue
        name = item.model.metadata.name
        if name in seen:
            first = seen[name]
            errors.append(
                FieldError(item.doc, ("metadata", "name"), f"duplicate job name {name!r} (first defined at {first.file}:{first.line})", "metadata.name")
            )
            continue
        seen[name] = item.doc
        errors.extend(check_job(item.model, catalog, contract, item.doc, rules))
        jobs.append(item.model)
    return jobs, errors


def load_jobs(
    paths: Iterable[str | Path], catalog: CloudCatalog, contract: Contract, progress: Progress | None = None
) -> list[JobDoc]:
    """Load and check job files; all-or-nothing, duplicates across files are errors."""
    loaded, errors = load_files(paths, progress)
    jobs, job_errors = check_jobs(loaded, catalog, contract)
    errors.extend(job_errors)
    if errors:
        raise SpecErrors(errors)
    return jobs
