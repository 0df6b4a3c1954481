"""``Job.from_doc`` fills a Job through its slots and copies the workload's fields itself: the
result must be the Job that ``Job(**fields)`` with ``workload.model_dump()`` gives, on every
kind of Job document; and ``plan``'s ``engine_jobs`` must be ``planned_jobs`` of each document."""

from __future__ import annotations

import dataclasses
import random

from scheduler.cli.offline import engine_jobs, planned_jobs
from scheduler.io.yamldocs import parse_documents
from scheduler.model import Job
from scheduler.paths import examples_dir
from scheduler.specs import JobDoc


def _reference(doc: JobDoc) -> Job:
    s = doc.spec
    return Job(
        name=doc.metadata.name,
        cls=s.class_,
        gpus=s.gpus,
        gpu_type=s.gpuType,
        priority=s.priority,
        duration_hours=s.durationHours,
        regions=tuple(s.regions) if s.regions else None,
        clouds=tuple(s.clouds) if s.clouds else None,
        jurisdiction=s.jurisdiction,
        entrypoint=s.entrypoint,
        workload=s.workload.model_dump() if s.workload else None,
    )


def _docs() -> list[JobDoc]:
    rng = random.Random(2)
    docs = []
    for i in range(300):
        spec: dict[str, object] = {
            "class": rng.choice(["training", "inference"]),
            "gpus": rng.choice([1, 8, 64]),
            "gpuType": "H100",
        }
        if rng.random() < 0.5:
            spec["priority"] = rng.randrange(-5, 100)
        if rng.random() < 0.5:
            spec["durationHours"] = rng.choice([1, 2.5, 72])
        if rng.random() < 0.3:
            spec["regions"] = rng.sample(["eastus", "westus3", "japaneast"], rng.randrange(1, 3))
        if rng.random() < 0.3:
            spec["clouds"] = ["azure", "oci"]
        if rng.random() < 0.3:
            spec["jurisdiction"] = "US"
        body = rng.random()
        if body < 0.3:
            spec["entrypoint"] = "python train.py"
        elif body < 0.7:
            spec["workload"] = {
                k: v
                for k, v in {"steps": 20, "stepSeconds": 0.5, "checkpointEvery": 4, "failAtStep": 7}.items()
                if rng.random() < 0.6
            }
        docs.append(
            JobDoc.model_validate({"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": f"j-{i}"}, "spec": spec})
        )
    for path in (examples_dir() / "job.yaml", examples_dir() / "jobs" / "mixed.yaml"):
        for d in parse_documents(path.read_text(), str(path)):
            docs.append(JobDoc.model_validate(d.data))
    return docs


def _fields(job: Job) -> list[tuple[str, type, object]]:
    return [(f.name, type(getattr(job, f.name)), getattr(job, f.name)) for f in dataclasses.fields(job)]


def test_from_doc_is_the_job_its_fields_make() -> None:
    docs = [d for d in _docs() if d.spec.serve is None]
    assert any(d.spec.workload is not None and d.spec.workload.failAtStep is not None for d in docs)
    for doc in docs:
        job, want = Job.from_doc(doc), _reference(doc)
        assert job == want and hash(job) == hash(want) and repr(job) == repr(want)
        assert _fields(job) == _fields(want)  # workload too (not part of ==), and every value's type
        assert type(job) is Job


def test_from_doc_on_a_subclass_builds_the_subclass() -> None:
    class Tagged(Job):
        __slots__ = ()

    doc = _docs()[0]
    job = Tagged.from_doc(doc)
    assert type(job) is Tagged and _fields(job) == _fields(_reference(doc))


def test_engine_jobs_are_the_planned_jobs_of_each_document() -> None:
    docs = _docs()
    served = JobDoc.model_validate(parse_documents((examples_dir() / "serve.yaml").read_text(), "serve.yaml")[0].data)
    docs.insert(3, served)
    got = engine_jobs(docs)
    want = [j for d in docs for j in planned_jobs(d)]
    assert got == want and [_fields(j) for j in got] == [_fields(j) for j in want]
    assert any(j.name == "assistant-api-r1" for j in got)  # the served model is placed as its replicas
