"""How a served model's parts are named and what a replica asks the engine for."""

from __future__ import annotations

import pytest

from scheduler.errors import MCSchedError
from scheduler.runtime.serve.naming import (
    GATEWAY_APP,
    Endpoint,
    replica_app,
    replica_doc,
    replica_index,
    replica_of_app,
    service_of_replica,
)
from scheduler.specs import JobDoc

SERVED = {
    "apiVersion": "mcsched.io/v1",
    "kind": "Job",
    "metadata": {"name": "chat"},
    "spec": {"class": "api-serving", "gpuType": "H100", "priority": 100, "regions": ["eastus"],
             "serve": {"model": "llama", "gpusPerReplica": 8, "replicas": {"min": 1, "max": 4}}},
}


def test_a_replica_is_an_api_serving_job_of_gpus_per_replica_with_the_services_constraints() -> None:
    JobDoc.model_validate(SERVED)  # gpus derived: 4 x 8
    doc = replica_doc(SERVED, 3)
    parsed = JobDoc.model_validate(doc)
    assert parsed.metadata.name == "chat-r3" and parsed.spec.gpus == 8 and parsed.spec.class_ == "api-serving"
    assert parsed.spec.priority == 100 and parsed.spec.regions == ["eastus"] and parsed.spec.serve is None
    assert parsed.metadata.labels == {"mcsched.io/service": "chat"}


def test_names_round_trip() -> None:
    assert replica_index("chat-r12", "chat") == 12 and replica_index("chat-r12", "cha") is None
    assert replica_index("chat-api-r1", "chat") is None
    assert replica_of_app(replica_app("chat-api-r2")) == "chat-api-r2" and service_of_replica("chat-api-r2") == "chat-api"
    assert replica_of_app(GATEWAY_APP) is None and replica_of_app("someone-elses-app") is None


def test_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCSCHED_SERVE_PORT", raising=False)
    monkeypatch.delenv("MCSCHED_SERVE_HOST", raising=False)
    assert Endpoint.from_env() == Endpoint("127.0.0.1", 8000)
    monkeypatch.setenv("MCSCHED_SERVE_PORT", "18000")
    monkeypatch.setenv("MCSCHED_SERVE_HOST", "0.0.0.0")
    assert Endpoint.from_env().url == "http://127.0.0.1:18000"
    monkeypatch.setenv("MCSCHED_SERVE_PORT", "eighty")
    with pytest.raises(MCSchedError, match="MCSCHED_SERVE_PORT"):
        Endpoint.from_env()


def test_the_shared_serving_modules_import_no_ray() -> None:
    """naming, policy and openai are used by the gateway, the controller and the offline planner alike."""
    from tests.test_code_quality import ROOT, imported_modules

    for name in ("naming", "policy", "openai"):
        assert not imported_modules(ROOT / "scheduler" / "runtime" / "serve" / f"{name}.py") & {"ray", "starlette", "aiohttp"}, name
