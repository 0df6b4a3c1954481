"""Names and documents shared by the controller, the gateway and the offline planner (no Ray).

A served model's replicas are ordinary api-serving jobs to the engine, named
``<job>-r<k>``; their Serve applications are ``mcsched-<job>-r<k>``; the controller's
mailbox actor is ``mcsched-serve:<job>``. Everything that finds a service's parts
(the gateway's sweeper, ``mcsched cancel``) goes through these functions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from scheduler.errors import MCSchedError

GATEWAY_APP = "mcsched-gateway"
GATEWAY_DEPLOYMENT = "Gateway"
REPLICA_DEPLOYMENT = "Replica"
APP_PREFIX = "mcsched-"
CONTROL_PREFIX = "mcsched-serve:"
NAMESPACE = "mcsched"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
_REPLICA = re.compile(r"^(?P<job>.+)-r(?P<k>[0-9]+)$")


def replica_name(job: str, k: int) -> str:
    return f"{job}-r{k}"


def replica_index(name: str, job: str) -> int | None:
    """k of ``<job>-r<k>``, or None when ``name`` is not a replica of ``job``."""
    m = _REPLICA.match(name)
    return int(m["k"]) if m and m["job"] == job else None


def replica_app(replica: str) -> str:
    return APP_PREFIX + replica


def replica_of_app(app: str) -> str | None:
    """The replica job an application serves (None for the gateway and foreign apps)."""
    if app == GATEWAY_APP or not app.startswith(APP_PREFIX):
        return None
    rest = app[len(APP_PREFIX):]
    return rest if _REPLICA.match(rest) else None


def service_of_replica(replica: str) -> str | None:
    m = _REPLICA.match(replica)
    return m["job"] if m else None


def control_name(job: str) -> str:
    return CONTROL_PREFIX + job


def replica_doc(doc: dict[str, Any], k: int) -> dict[str, Any]:
    """The engine job for replica ``k`` of a served model: the service's constraints and
    priority, ``gpusPerReplica`` GPUs, and no workload (Serve runs the replica)."""
    spec = doc["spec"]
    keep = ("class", "gpuType", "regions", "clouds", "jurisdiction", "priority", "durationHours")
    out = {key: spec[key] for key in keep if spec.get(key) is not None}
    out["gpus"] = spec["serve"]["gpusPerReplica"]
    name = doc["metadata"]["name"]
    return {
        "apiVersion": doc.get("apiVersion", "mcsched.io/v1"),
        "kind": "Job",
        "metadata": {"name": replica_name(name, k), "labels": {"mcsched.io/service": name}},
        "spec": out,
    }


@dataclass(frozen=True)
class Endpoint:
    """Where Serve's HTTP proxy listens: loopback by default, ``0.0.0.0`` inside a pod.

    Read from ``MCSCHED_SERVE_HOST`` / ``MCSCHED_SERVE_PORT`` (a Ray job gets them from
    ``--runtime-env-json '{"env_vars": ...}'`` or from the head's environment). Serve's proxy
    is cluster-wide: the first served model fixes it for the cluster's life.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    @classmethod
    def from_env(cls) -> Endpoint:
        raw = os.environ.get("MCSCHED_SERVE_PORT", str(DEFAULT_PORT))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise MCSchedError(f"MCSCHED_SERVE_PORT must be a port number, got {raw!r}")
        return cls(os.environ.get("MCSCHED_SERVE_HOST", DEFAULT_HOST), int(raw))

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"
