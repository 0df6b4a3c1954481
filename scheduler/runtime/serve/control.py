"""The controller's mailbox: a small named, detached actor per served model.

The controller (a thread of the scheduler actor, see ``owner.py``) publishes its routing
table here and the gateway syncs with it (pushing the requests it has in flight per
replica, pulling the table). The mailbox is detached so that it outlives both the driver
that asked for the service and a restart of the scheduler actor: the gateway keeps routing
with the last table meanwhile. Only the controller's shutdown removes it
(``close_control``); the gateway takes a vanished mailbox as the signal to undeploy that
service and release its replicas (``app.sweep_orphans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import ray

from scheduler.runtime.serve.naming import CONTROL_PREFIX, NAMESPACE, control_name

LOAD_MAX_AGE_SECONDS = 5.0


class ServiceControl:
    """Plain class; ``open_control`` applies Ray (async: a gateway's sync long-polls)."""

    def __init__(self, job: str, model: str) -> None:
        self._table: dict[str, Any] = {"job": job, "model": model, "replicas": [], "stopping": False, "version": 0}
        self._loads: dict[str, tuple[float, dict[str, int]]] = {}
        self._stop: str | None = None
        self._changed: asyncio.Event | None = None

    async def publish(self, table: dict[str, Any]) -> None:
        """The controller's current routes (``replicas``: name, app, cloud, region, state)."""
        self._table = {**table, "version": self._table["version"] + 1}
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def sync(self, gateway: str, ongoing: dict[str, int], version: int = -1, wait: float = 0.0) -> dict[str, Any]:
        """A gateway replica reports its in-flight requests per replica and gets the routes;
        with ``wait`` it gets them as soon as they differ from ``version`` (or after ``wait`` s),
        so a new replica is routed to the moment the controller publishes it."""
        self._loads[gateway] = (time.monotonic(), ongoing)
        if wait > 0 and self._table["version"] == version:
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
        return self._table

    async def load(self) -> dict[str, int]:
        """In-flight requests per replica, summed over the gateway replicas heard from lately."""
        now = time.monotonic()
        total: dict[str, int] = {}
        for gw, (at, ongoing) in list(self._loads.items()):
            if now - at > LOAD_MAX_AGE_SECONDS:
                del self._loads[gw]
                continue
            for replica, n in ongoing.items():
                total[replica] = total.get(replica, 0) + n
        return total

    async def request_stop(self, reason: str) -> None:
        self._stop = self._stop or reason

    async def stop_reason(self) -> str | None:
        return self._stop


def open_control(job: str, model: str, *, adopt: bool) -> Any:
    """The mailbox for ``job``, detached. ``adopt``: a resumed controller keeps the one that
    routed while it was away (its table and any stop request); a new service starts clean."""
    try:
        old = ray.get_actor(control_name(job), namespace=NAMESPACE)
    except ValueError:
        old = None
    if old is not None and adopt:
        ray.get(old.stop_reason.remote(), timeout=30)  # answering
        return old
    if old is not None:  # left by a service that ended without its clean-up
        ray.kill(old)
        _wait_gone(job)
    handle: Any = ray.remote(ServiceControl).options(
        name=control_name(job), namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=0
    ).remote(job, model)
    ray.get(handle.stop_reason.remote(), timeout=30)  # created and answering
    return handle


def close_control(job: str) -> None:
    """Remove ``job``'s mailbox: the service has ended (called after its replicas are released)."""
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(control_name(job), namespace=NAMESPACE))
        _wait_gone(job)


def _wait_gone(job: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(control_name(job), namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.1)


def find_controls() -> dict[str, Any]:
    """Every live service mailbox on the cluster, by job name."""
    out: dict[str, Any] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, ns = entry["name"], entry["namespace"]
        if ns == NAMESPACE and name.startswith(CONTROL_PREFIX):
            try:
                out[name[len(CONTROL_PREFIX):]] = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # died since the listing
                continue
    return out


def cancel_service(job: str) -> bool:
    """Ask ``job``'s controller to undeploy and release everything; False if it is not served."""
    try:
        handle = ray.get_actor(control_name(job), namespace=NAMESPACE)
    except ValueError:
        return False
    ray.get(handle.request_stop.remote("cancelled"), timeout=30)
    return True
