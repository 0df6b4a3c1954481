"""The Ray Serve side: the gateway (OpenAI HTTP API, routing, in-flight counts) and the
mock-model replica, plus the few Serve calls the controller makes.

Each replica is its own one-replica Serve application whose placement group asks for its
pool's Ray resource, and it refuses to start unless Ray really assigned that resource: the
``x-mcsched-cloud`` header a client sees is where Ray ran the replica, not a label.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from scheduler.runtime.resources import bundles
from scheduler.runtime.serve.control import find_controls
from scheduler.runtime.serve.keys import Guard
from scheduler.runtime.serve.naming import (
    GATEWAY_APP,
    GATEWAY_DEPLOYMENT,
    REPLICA_DEPLOYMENT,
    Endpoint,
    replica_of_app,
    service_of_replica,
)
from scheduler.runtime.serve.openai import (
    DONE,
    MAX_BODY_BYTES,
    ApiError,
    Kind,
    Request,
    chunk,
    finish_reason,
    generate,
    models_body,
    parse_request,
    response_body,
    sse,
    usage_chunk,
)

log = logging.getLogger("mcsched.serve")
SYNC_SECONDS = 0.5
SWEEP_SECONDS = 5.0
REPORT_SECONDS = 2.0
KEY_REFRESH_SECONDS = 2.0  # a revoked key stops working within this
GATEWAY_REPLICAS = 1  # each replica enforces 1/GATEWAY_REPLICAS of a key's rate
MAX_TTFT_SAMPLES = 5000
QUIET = {"enable_access_log": False, "log_level": "WARNING"}
NO_MODEL = "none"  # the model label of requests that name no served model
NO_KEY = "none"  # the key label of requests refused before a key was recognised
# What the gateway answers itself (bad requests, /v1/models): no replica, so no cloud ran it.
GATEWAY_HEADERS = {"x-mcsched-cloud": "none", "x-mcsched-region": "none", "x-mcsched-replica": "gateway"}
PATHS: dict[str, Kind] = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}


# --------------------------------------------------------------------------- the replica


class Replica:
    """One replica of a served model (the mock model), pinned to its pool by its placement group."""

    def __init__(self, info: dict[str, Any]) -> None:
        ctx = ray.get_runtime_context()
        assigned = ctx.get_assigned_resources()  # type: ignore[no-untyped-call]
        if assigned.get(info["resource"], 0.0) <= 0.0:
            raise RuntimeError(f"{info['replica']}: Ray did not assign {info['resource']} (got {assigned}); refusing to serve off its pool")
        self.info = {**info, "node": ctx.get_node_id(), "pg": ctx.get_placement_group_id(), "assigned": assigned}
        self.tokens_per_second = float(info["tokens_per_second"])

    def where(self) -> dict[str, Any]:
        """Where Ray runs this replica (node, placement group, assigned resources)."""
        return self.info

    async def complete(self, wire: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """The whole answer and its time to first token."""
        req = Request.from_dict(wire)
        started = time.monotonic()
        ttft = 0.0
        words: list[str] = []
        async for piece in generate(req, self.tokens_per_second):
            if not words:
                ttft = time.monotonic() - started
            words.extend(piece)
        return response_body(req, "".join(words), len(words), finish_reason(req)), ttft

    async def stream(self, wire: dict[str, Any]) -> AsyncIterator[str]:
        """Server-sent events, ready to forward: chunks, the finish chunk, usage, ``[DONE]``."""
        req = Request.from_dict(wire)
        n = 0
        async for piece in generate(req, self.tokens_per_second):
            yield chunk(req, "".join(piece), first=n == 0)
            n += len(piece)
        yield chunk(req, None, finish_reason(req))
        if req.include_usage:
            yield usage_chunk(req, n)
        yield DONE


# --------------------------------------------------------------------------- the gateway


@dataclass
class Route:
    name: str
    app: str
    cloud: str
    region: str
    state: str
    handle: Any


@dataclass
class Service:
    job: str
    model: str
    routes: dict[str, Route]
    replicas: list[dict[str, Any]]  # the controller's last table, pending ones included
    version: int = -1


class Gateway:
    """The OpenAI HTTP API for every served model on the cluster (Serve application ``/``)."""

    def __init__(self) -> None:
        self.id = serve.get_replica_context().replica_id.unique_id
        self.services: dict[str, Service] = {}
        self.ongoing: Counter[str] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.ttft: dict[str, list[float]] = {}
        self.handles: dict[str, Any] = {}
        self.errors: Counter[tuple[str, str, str]] = Counter()  # (status, error code, key name)
        self.guard = Guard(share=1.0 / GATEWAY_REPLICAS)
        self._turn = 0
        self._tasks = [asyncio.get_running_loop().create_task(self._loop())]

    # ---------------------------------------------------------------- HTTP

    async def __call__(self, request: HttpRequest) -> Response:
        """Route one HTTP request; every refusal is an OpenAI error body, counted by status and code."""
        label, caller = NO_MODEL, NO_KEY  # bounded: only a served model's / a key's name becomes a label value
        try:
            path = request.url.path.rstrip("/") or "/"
            if path in ("/", "/healthz"):
                return PlainTextResponse(
                    "mcsched gateway: POST /v1/chat/completions, POST /v1/completions, GET /v1/models\n", headers=GATEWAY_HEADERS
                )
            kind = PATHS.get(path)
            if kind is None and path != "/v1/models":
                raise ApiError(404, f"Invalid URL ({request.method} {path})", code="not_found")
            who = self.guard.authenticate(request.headers.get("authorization"))
            caller = who.name
            self.guard.admit(who)
            if kind is None:  # /v1/models
                if request.method != "GET":
                    raise ApiError(405, f"{request.method} is not allowed on {path} (use GET)", code="method_not_allowed")
                served = sorted((s.model, s.job) for s in self.services.values() if s.routes)
                return JSONResponse(models_body(served, int(time.time())), headers=GATEWAY_HEADERS)
            if request.method != "POST":
                raise ApiError(405, f"{request.method} is not allowed on {path} (use POST)", code="method_not_allowed")
            req = parse_request(kind, await _read_capped(request))
            service = next((s for s in self.services.values() if s.model == req.model and s.routes), None)
            if service is None:
                raise ApiError(404, f"The model `{req.model}` does not exist or you do not have access to it.", param="model", code="model_not_found")
            label = service.model
            route = self._pick(service)
            if route is None:
                raise ApiError(503, f"no replica of `{req.model}` is ready yet; retry shortly", code="no_ready_replica")
        except ApiError as exc:
            return self._refuse(exc, label, caller)
        except Exception as exc:  # a bug here must still answer as OpenAI does, and be counted
            log.exception("gateway failed on a request")
            return self._refuse(ApiError(500, f"internal error: {type(exc).__name__}", code="internal_error"), label, caller)
        return await self._forward(service.model, route, req)

    def _refuse(self, exc: ApiError, model: str, key: str, headers: dict[str, str] | None = None) -> Response:
        self.requests[(model, str(exc.status))] += 1
        self.errors[(str(exc.status), exc.code or "other", key)] += 1
        return self._error(exc, headers)

    async def _forward(self, model: str, route: Route, req: Request) -> Response:
        headers = {"x-mcsched-cloud": route.cloud, "x-mcsched-region": route.region, "x-mcsched-replica": route.name}
        self.ongoing[route.name] += 1
        started = time.monotonic()
        if not req.stream:
            try:
                body, ttft = await route.handle.complete.remote(req.to_dict())
            except Exception as exc:  # the replica died or was removed under us
                failed = ApiError(502, f"replica {route.name} failed: {type(exc).__name__}", code="replica_failed")
                return self._refuse(failed, model, NO_KEY, headers)
            finally:
                self.ongoing[route.name] -= 1
            self._observe(model, "200", ttft)
            return JSONResponse(body, headers=headers)
        gen = route.handle.options(stream=True).stream.remote(req.to_dict())

        async def events() -> AsyncIterator[str]:
            code, first = "200", True
            try:
                async for piece in gen:
                    if first:
                        self._observe(model, None, time.monotonic() - started)
                        first = False
                    yield piece
            except Exception as exc:
                code = "502"
                self.errors[(code, "replica_failed", NO_KEY)] += 1
                yield sse(ApiError(502, f"replica {route.name} failed: {type(exc).__name__}", code="replica_failed").body())
                yield DONE
            finally:
                self.ongoing[route.name] -= 1
                self.requests[(model, code)] += 1

        return StreamingResponse(events(), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})

    def _pick(self, service: Service) -> Route | None:
        """The ready replica with the fewest requests in flight (round robin among equals)."""
        ready = [r for r in service.routes.values() if r.state == "ready"]
        if not ready:
            return None
        self._turn += 1
        least = min(self.ongoing[r.name] for r in ready)
        tied = [r for r in ready if self.ongoing[r.name] == least]
        return tied[self._turn % len(tied)]

    def _observe(self, model: str, code: str | None, ttft: float) -> None:
        samples = self.ttft.setdefault(model, [])
        if len(samples) < MAX_TTFT_SAMPLES:
            samples.append(ttft)
        if code is not None:
            self.requests[(model, code)] += 1

    @staticmethod
    def _error(exc: ApiError, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers={**(headers or GATEWAY_HEADERS), **exc.headers})

    # ---------------------------------------------------------------- control loop

    async def _loop(self) -> None:
        """Sync routes every SYNC_SECONDS; sweep orphans and report metrics less often."""
        due = {self._keys: 0.0, self._sync: 0.0, self._sweep: 0.0, self._report: 0.0}
        every = {self._keys: KEY_REFRESH_SECONDS, self._sync: SYNC_SECONDS, self._sweep: SWEEP_SECONDS, self._report: REPORT_SECONDS}
        while True:
            for step, at in due.items():
                now = time.monotonic()
                if now < at:
                    continue
                due[step] = now + every[step]
                try:
                    await step()
                except Exception:  # one failed step must not stop routing updates
                    log.exception("gateway step %s failed", step.__name__)
                    await asyncio.sleep(SYNC_SECONDS)
            if not self.services:
                await asyncio.sleep(SYNC_SECONDS)  # nothing to long-poll yet

    async def _sync(self) -> None:
        """Push in-flight counts to every service's controller, pull its routes (long-poll:
        returns early when a controller publishes new routes)."""
        controls = await asyncio.to_thread(find_controls)

        async def one(job: str, control: Any) -> None:
            known = self.services.get(job)
            ongoing = {name: self.ongoing[name] for name in (known.routes if known else {})}
            try:
                table = await control.sync.remote(self.id, ongoing, known.version if known else -1, SYNC_SECONDS)
            except ray.exceptions.RayActorError:
                return  # its driver is gone: the sweeper cleans up
            self._apply(job, table)

        await asyncio.gather(*(one(job, control) for job, control in controls.items()))
        for job in set(self.services) - set(controls):
            del self.services[job]

    def _apply(self, job: str, table: dict[str, Any]) -> None:
        routes: dict[str, Route] = {}
        if not table.get("stopping"):
            for r in table["replicas"]:
                if r["state"] not in ("ready", "draining"):
                    continue
                handle = self.handles.get(r["app"])
                if handle is None:
                    handle = self.handles[r["app"]] = serve.get_deployment_handle(REPLICA_DEPLOYMENT, app_name=r["app"])
                routes[r["name"]] = Route(r["name"], r["app"], r["cloud"], r["region"], r["state"], handle)
        self.services[job] = Service(job, table["model"], routes, list(table["replicas"]), table.get("version", -1))
        live = {r.app for svc in self.services.values() for r in svc.routes.values()}
        self.handles = {app: h for app, h in self.handles.items() if app in live}

    async def _keys(self) -> None:
        """The key table (hashes, names, rates) from the scheduler actor, which reads the key file."""
        from scheduler.runtime.actor import get_actor

        table = await get_actor().api_keys.remote()
        self.guard.update({h: (str(name), float(rate)) for h, (name, rate) in table.items()})

    async def _sweep(self) -> None:
        await asyncio.to_thread(sweep_orphans)

    async def _report(self) -> None:
        """Request counts and TTFT samples to the scheduler's exporter (one Prometheus target)."""
        if not self.requests and not self.ttft and not self.errors:
            return
        report = {
            "requests": [[m, c, n] for (m, c), n in self.requests.items()],
            "errors": [[status, code, key, n] for (status, code, key), n in self.errors.items()],
            "ttft": self.ttft,
        }
        self.requests, self.ttft, self.errors = Counter(), {}, Counter()
        from scheduler.runtime.actor import get_actor

        await get_actor().serve_report.remote(report)


async def _read_capped(request: HttpRequest) -> bytes:
    """The body, refusing more than MAX_BODY_BYTES whether or not Content-Length says so."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {MAX_BODY_BYTES}", code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"request body exceeds the limit of {MAX_BODY_BYTES} bytes", code="request_too_large")
    return bytes(body)


def sweep_orphans() -> list[str]:
    """Delete replica applications whose controller is gone and release their capacity.

    The order matters: applications are listed *before* controllers, because a controller
    always exists before its first application; the other order could catch a brand-new
    application whose controller was not listed yet.
    """
    apps = serve.status().applications
    live = set(find_controls())
    orphans = [
        (app, replica) for app, st in apps.items()
        if (replica := replica_of_app(app)) is not None and service_of_replica(replica) not in live and _status(st) != "DELETING"
    ]
    if not orphans:
        return []
    from scheduler.runtime.actor import get_actor

    scheduler = get_actor()
    for app, replica in orphans:
        log.warning("service of %s is gone (its driver exited): undeploying and releasing it", replica)
        serve.delete(app, _blocking=False)
        ray.get(scheduler.release.remote(replica, "stopped"), timeout=30)
    return [replica for _, replica in orphans]


# --------------------------------------------------------------------------- controller-side calls


def start_serve(endpoint: Endpoint) -> str:
    """Start Serve's HTTP proxy (head node only, so one Service exposes it); returns its URL.

    Serve is cluster-wide: if it already runs, its address stays as it is and is returned.
    """
    from ray.serve.context import _get_global_client

    from scheduler.runtime.cluster import port_free

    try:
        running: Any = _get_global_client()
    except Exception:
        running = None
    if running is None and endpoint.host in ("127.0.0.1", "localhost") and not port_free(endpoint.port):
        from scheduler.errors import RuntimeUnavailable

        raise RuntimeUnavailable(f"Serve port {endpoint.host}:{endpoint.port} is in use (set MCSCHED_SERVE_PORT to a free port)")
    serve.start(
        http_options={"host": endpoint.host, "port": endpoint.port},
        proxy_location="HeadOnly",
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    client = _get_global_client()
    assert client is not None
    cfg = client.http_config
    return Endpoint(cfg.host, cfg.port).url


def app_statuses() -> dict[str, str]:
    """Serve application -> status (RUNNING, DEPLOYING, DEPLOY_FAILED, DELETING, ...)."""
    return {name: _status(st) for name, st in serve.status().applications.items()}


def _status(app: Any) -> str:
    return str(getattr(app.status, "value", app.status))


def ensure_gateway() -> None:
    if GATEWAY_APP in app_statuses():
        return
    gateway = serve.deployment(
        name=GATEWAY_DEPLOYMENT, num_replicas=1, max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0}, logging_config=QUIET
    )(Gateway)
    serve.run_many([serve.RunTarget(gateway.bind(), name=GATEWAY_APP, route_prefix="/")], wait_for_applications_running=False)


def deploy_replica(app: str, info: dict[str, Any], gpus: int) -> None:
    """A one-replica application whose placement group holds ``gpus`` of the replica's pool."""
    resource = info["resource"]
    gang = bundles(resource, gpus)
    replica = serve.deployment(
        name=REPLICA_DEPLOYMENT,
        num_replicas=1,
        max_ongoing_requests=4096,  # the gateway balances; this is only a backstop
        ray_actor_options={"num_cpus": 0, "resources": dict(gang[0])},
        placement_group_bundles=gang,
        placement_group_strategy="PACK",
        graceful_shutdown_timeout_s=5,
        logging_config=QUIET,
    )(Replica)
    serve.run_many([serve.RunTarget(replica.bind(info), name=app, route_prefix=None)], wait_for_applications_running=False)


def replica_where(app: str, timeout: float = 10.0) -> dict[str, Any]:
    handle = serve.get_deployment_handle(REPLICA_DEPLOYMENT, app_name=app)
    result: dict[str, Any] = handle.where.remote().result(timeout_s=timeout)
    return result


def delete_app(app: str) -> None:
    serve.delete(app, _blocking=False)
