"""The serving controller of an api-serving Job with ``spec.serve``, run by the scheduler actor.

``own_service`` is the body of the thread the scheduler actor runs for each served model
(``owner.py``); ``follow_service`` is what the Ray job driver (``python -m scheduler run
api.yaml``) does: hand the service to the actor and print its lines until it ends.

The controller is the only thing that adds or removes replicas, and it does both through
the scheduler actor, so every replica is a recorded placement on the holder:

- a replica is asked for (``submit``), waits in mcsched's queue if the holder is full
  (or the engine preempts movable work for it), and only once placed is deployed as a
  Serve application on its pool's Ray resource; it joins the gateway's routes when it
  answers;
- scaling down drains a replica (no new requests), releases its placement to the queue
  and deletes its application;
- ``ray job stop`` (SIGTERM to the driver), Ctrl-C and ``mcsched cancel JOB`` undeploy
  everything and release every placement; the driver's death (``kill -9``) does not;
- a restarted scheduler actor resumes the controller, which adopts the replicas the books
  hold placed and the Serve applications already running (``Controller.adopt``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from scheduler.decision import Decision
from scheduler.errors import AdmissionError, MCSchedError
from scheduler.runtime.actor import get_actor
from scheduler.runtime.resources import pool_resource
from scheduler.runtime.serve import app as serve_app
from scheduler.runtime.serve.control import close_control, open_control
from scheduler.runtime.serve.naming import Endpoint, replica_app, replica_doc, replica_index
from scheduler.runtime.serve.policy import Autoscaler, ScalingPolicy, Step
from scheduler.runtime.states import EXIT_CODES, stop_own_ray_job

TICK_SECONDS = 0.5
DRAIN_SECONDS = 30.0
REPORT_SECONDS = 2.0
#: Replica counts are re-sent at least this often even when unchanged, so an exporter that
#: restarted without them (or missed one) heals within this.
REPORT_REFRESH_SECONDS = 15.0
GATEWAY_CHECK_SECONDS = 5.0
EXIT_STOPPED = EXIT_CODES["stopped"]


@dataclass
class Replica:
    """One replica as the controller tracks it."""

    name: str
    state: str  # queued | deploying | ready | draining
    cloud: str | None = None
    region: str | None = None
    gpu_type: str | None = None
    placed_at: float = 0.0
    drain_since: float = 0.0
    reason: str | None = None
    node: str = ""

    @property
    def app(self) -> str:
        return replica_app(self.name)

    def route(self) -> dict[str, Any]:
        return {"name": self.name, "app": self.app, "cloud": self.cloud, "region": self.region, "state": self.state}


@dataclass
class Controller:
    doc: dict[str, Any]
    scheduler: Any
    control: Any
    say: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    replicas: dict[str, Replica] = field(default_factory=dict)
    next_k: int = 1
    scale_events: list[tuple[str, str]] = field(default_factory=list)
    scale_up_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        serve = self.doc["spec"]["serve"]
        self.job: str = self.doc["metadata"]["name"]
        self.model: str = serve["model"]
        self.gpus_per_replica = int(serve["gpusPerReplica"])
        self.tokens_per_second = float(serve.get("tokensPerSecond", 50.0))
        reps = serve.get("replicas") or {}
        self.autoscaler = Autoscaler(
            ScalingPolicy(
                min_replicas=int(reps.get("min", 1)),
                max_replicas=int(reps.get("max", 1)),
                target_ongoing=float(serve.get("targetOngoingRequests", 4.0)),
                down_delay_seconds=float(serve.get("scaleDownDelaySeconds", 30.0)),
            )
        )
        self._published: list[dict[str, Any]] | None = None
        self._reported: dict[tuple[str, str], int] | None = None
        self._next_report = 0.0
        self._reported_at = 0.0
        self._next_gateway_check = 0.0

    # ---------------------------------------------------------------- engine calls

    def _call(self, method: str, *args: Any) -> Any:
        return ray.get(getattr(self.scheduler, method).remote(*args), timeout=60)

    def _ask(self, count: int) -> None:
        """Ask the engine for ``count`` more replica placements (one batch, one decision each)."""
        docs = []
        for _ in range(count):
            docs.append(replica_doc(self.doc, self.next_k))
            self.next_k += 1
        resp = self._call("submit", docs)
        if not resp["ok"]:
            raise AdmissionError(f"{self.job}: {resp['error']}")
        for row in resp["decisions"]:
            d = Decision.from_dict(row)
            self.say(d.line())
            rep = self.replicas[d.job] = Replica(d.job, "queued", reason=d.reason)
            if d.outcome == "placed":
                self._placed(rep, d)

    def _placed(self, rep: Replica, d: Decision) -> None:
        """The engine placed ``rep``: deploy it on that pool's Ray resource."""
        assert d.cloud is not None and d.region is not None
        rep.state, rep.cloud, rep.region, rep.gpu_type = "deploying", d.cloud, d.region, d.gpu_type
        rep.placed_at = self.clock()
        info = {
            "replica": rep.name, "job": self.job, "model": self.model, "cloud": d.cloud, "region": d.region,
            "resource": pool_resource(d.cloud, d.region, d.gpu_type), "tokens_per_second": self.tokens_per_second,
        }
        serve_app.deploy_replica(rep.app, info, self.gpus_per_replica)

    def _drop(self, rep: Replica, release: str | None) -> None:
        """Give a replica's placement back (release a running one, cancel a queued one), then undeploy."""
        if release is not None and rep.state != "queued":
            self._call("release", rep.name, release)
        elif release is not None:
            with contextlib.suppress(ray.exceptions.RayTaskError):  # ended meanwhile
                self._call("cancel", rep.name)
        if rep.state != "queued":
            serve_app.delete_app(rep.app)
        del self.replicas[rep.name]

    def deploying(self) -> bool:
        return any(r.state == "deploying" for r in self.replicas.values())

    # ---------------------------------------------------------------- one control step

    def start(self) -> None:
        self._ask(self.autoscaler.policy.min_replicas)
        self._publish()

    def adopt(self) -> None:
        """A resumed controller (the scheduler actor restarted): take over the replicas the
        books hold, keep the Serve applications that still run, redeploy the missing ones.

        Ready replicas are marked ready before the first publish, so the gateway's routes
        never lose them; below ``replicas.min`` the next steps ask for more as usual.
        """
        rows = [Decision.from_dict(r) for r in self._call("status", self.job)]
        apps = serve_app.app_statuses()
        for d in sorted(rows, key=lambda d: replica_index(d.job, self.job) or 0):
            k = replica_index(d.job, self.job)
            if k is None or d.outcome not in ("placed", "queued"):
                continue
            self.next_k = max(self.next_k, k + 1)
            rep = self.replicas[d.job] = Replica(d.job, "queued", reason=d.reason)
            if d.outcome == "queued":
                continue
            status = apps.get(rep.app)
            if status in (None, "DELETING", "DEPLOY_FAILED", "UNHEALTHY"):
                self.say(f"{rep.name}: its Serve application is {status or 'gone'}; redeploying on {d.cloud}/{d.region}")
                self._placed(rep, d)
                continue
            rep.state, rep.cloud, rep.region, rep.gpu_type, rep.placed_at = "deploying", d.cloud, d.region, d.gpu_type, self.clock()
            self._check_deploy(rep, status)
        self.say(f"{self.job}: resumed by the scheduler actor with {len(self.replicas)} replica(s): "
                 + (", ".join(f"{r.name} {r.state}" for r in self.replicas.values()) or "none"))
        if len(self.replicas) < self.autoscaler.policy.min_replicas:
            self._ask(self.autoscaler.policy.min_replicas - len(self.replicas))
        self._publish()

    def step(self) -> str | None:
        """One pass of the control loop; returns a stop reason when the service must end."""
        now = self.clock()
        # 1. a cancel from outside (`mcsched cancel JOB`)
        stop: str | None = ray.get(self.control.stop_reason.remote(), timeout=30)
        if stop:
            return stop
        # 2. what the engine says about each replica (moves, evictions, queued ones placed)
        for rep in list(self.replicas.values()):
            self._converge(rep, Decision.from_dict(self._call("status", rep.name)[0]))
        # 3. deploying replicas that answer now join the routes
        apps = serve_app.app_statuses()
        for rep in [r for r in self.replicas.values() if r.state == "deploying"]:
            self._check_deploy(rep, apps.get(rep.app))
        # 4. drained replicas leave: placement back to the queue, application deleted
        load: dict[str, int] = ray.get(self.control.load.remote(), timeout=30)
        for rep in [r for r in self.replicas.values() if r.state == "draining"]:
            if load.get(rep.name, 0) == 0 or now - rep.drain_since > DRAIN_SECONDS:
                self._drop(rep, "finished")
                self.scale_events.append((self.model, "down"))
                self.say(f"scaled down: released {rep.name} on {rep.cloud}/{rep.region}")
        # 5. autoscale on the requests in flight
        self._autoscale(now, sum(load.values()))
        # 6. routes to the gateway, metrics to the exporter, the gateway itself
        self._publish()
        if now >= self._next_report:
            self._report()
            self._next_report = now + REPORT_SECONDS
        if now >= self._next_gateway_check:
            serve_app.ensure_gateway()
            self._next_gateway_check = now + GATEWAY_CHECK_SECONDS
        return None

    def _converge(self, rep: Replica, d: Decision) -> None:
        if d.outcome == "placed" and rep.state == "queued":
            self.say(d.line())
            self._placed(rep, d)
        elif d.outcome == "placed" and (d.cloud, d.region) != (rep.cloud, rep.region):
            self.say(f"{rep.name} moved to {d.cloud}/{d.region}: redeploying")
            serve_app.delete_app(rep.app)
            self._placed(rep, d)
        elif d.outcome == "queued" and rep.state != "queued":
            self.say(f"{rep.name} lost its placement ({d.reason}): undeployed, waiting in the queue")
            serve_app.delete_app(rep.app)
            rep.state, rep.reason = "queued", d.reason
        elif d.outcome == "queued" and d.reason != rep.reason:
            self.say(f"{rep.name} still queued: {d.reason}: {d.detail}")
            rep.reason = d.reason
        elif d.outcome not in ("placed", "queued"):
            self.say(f"{rep.name} ended from outside ({d.outcome}): undeployed")
            self._drop(rep, None)

    def _check_deploy(self, rep: Replica, status: str | None) -> None:
        if status == "RUNNING":
            where = serve_app.replica_where(rep.app)
            self._call("bind", rep.name, where["pg"])  # the placement group now holds the gang
            rep.state, rep.node = "ready", where["node"]
            took = self.clock() - rep.placed_at
            self.scale_up_seconds.append(took)
            assigned = ", ".join(f"{k}={v:g}" for k, v in sorted(where["assigned"].items()))
            self.say(f"{rep.name} answering on {rep.cloud}/{rep.region} (Ray node {rep.node[:12]}, resources {assigned}) {took:.1f}s after its placement")
        elif status in ("DEPLOY_FAILED", "UNHEALTHY"):
            self.say(f"{rep.name} failed to start on {rep.cloud}/{rep.region} ({status}); releasing it")
            self._drop(rep, "failed")

    def _autoscale(self, now: float, in_flight: int) -> None:
        self.autoscaler.observe(now, in_flight)
        ready = [r for r in self.replicas.values() if r.state == "ready"]
        queued = [r for r in self.replicas.values() if r.state == "queued"]
        pending = [r for r in self.replicas.values() if r.state in ("queued", "deploying")]
        step = self.autoscaler.decide(now, len(ready), len(pending))
        target = self.autoscaler.policy.target_ongoing
        if step is Step.UP:
            self.say(f"scale up: {self.autoscaler.load():.1f} requests in flight over {len(ready)} ready replica(s) (target {target:g} each); asking for one more")
            self.scale_events.append((self.model, "up"))
            self._ask(1)
        elif step is Step.DOWN:
            victim = max(ready, key=lambda r: (r.placed_at, r.name))
            self.say(f"scale down: {self.autoscaler.load():.1f} requests in flight over {len(ready)} replica(s) (target {target:g} each); draining {victim.name}")
            victim.state, victim.drain_since = "draining", now
        elif queued and self.autoscaler.desired() <= len(ready) and len(ready) >= self.autoscaler.policy.min_replicas:
            for rep in queued:
                self.say(f"{rep.name} no longer needed: leaving the queue")
                self._drop(rep, "cancelled")

    def _publish(self) -> None:
        routes = [r.route() for r in sorted(self.replicas.values(), key=lambda r: r.name)]
        if routes != self._published:
            self.control.publish.remote({"job": self.job, "model": self.model, "replicas": routes, "stopping": False})
            self._published = routes

    def _report(self, final: bool = False) -> None:
        pools: dict[tuple[str, str], int] = {}
        for r in self.replicas.values():
            if r.state in ("ready", "draining") and not final and r.cloud and r.region:
                pools[(r.cloud, r.region)] = pools.get((r.cloud, r.region), 0) + 1
        now = self.clock()
        if pools == self._reported and not self.scale_events and now - self._reported_at < REPORT_REFRESH_SECONDS:
            return
        report = {
            "replicas": {"model": self.model, "service": self.job, "pools": [[c, rg, n] for (c, rg), n in pools.items()]},
            "scale": self.scale_events,
        }
        try:
            ray.get(self.scheduler.serve_report.remote(report), timeout=10)
        except (ray.exceptions.RayError, AttributeError):
            return  # metrics are best effort; the ledger holds the record
        self._reported, self.scale_events, self._reported_at = pools, [], now

    # ---------------------------------------------------------------- the end

    def shutdown(self, reason: str) -> None:
        """Undeploy and release everything, quickly (``ray job stop`` kills us ~3 s after SIGTERM)."""
        self.control.publish.remote({"job": self.job, "model": self.model, "replicas": [], "stopping": True})
        released = []
        for rep in list(self.replicas.values()):
            try:
                self._drop(rep, "cancelled" if rep.state == "queued" else reason)
                released.append(rep.name)
            except MCSchedError as exc:
                self.say(f"{rep.name}: {exc}")
        self._report(final=True)
        # The gateway stays: with no model left it still answers as OpenAI does (404 model_not_found).
        self.say(f"{self.job}: {reason}; undeployed {self.model} and released {', '.join(released) or 'nothing'}")


def _end_ray_job(reason: str) -> int:
    """After a cancel, make the Ray job STOPPED as the books say cancelled (runtime/states.py)."""
    if reason != "cancelled":
        return EXIT_CODES.get(reason, 0)
    got: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: got.append(signum))  # Ray's stop: the clean-up is done
    stop_own_ray_job(lambda: bool(got))
    return EXIT_CODES["cancelled"]


def own_service(
    doc: dict[str, Any], endpoint: tuple[str, int], say: Callable[[str], None], *, resume: bool, stop: Callable[[], str | None]
) -> str:
    """Serve one model until stopped or cancelled (the scheduler actor's thread, ``owner.Runner``).

    ``resume``: the actor restarted and finds this service in its file: adopt what runs.
    ``stop()``: a stop asked through the actor (the following driver got ``ray job stop``).
    Returns the end reason (``stopped``, ``cancelled``); the replicas are released and the
    mailbox removed by then.
    """
    job, model = doc["metadata"]["name"], doc["spec"]["serve"]["model"]
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's per-call INFO lines would drown ours
    scheduler = get_actor()  # this very actor, through Ray: the same validated, recorded calls as any client
    url = serve_app.start_serve(Endpoint(*endpoint))
    control = open_control(job, model, adopt=resume)
    serve_app.ensure_gateway()
    ctl = Controller(doc, scheduler, control, say)
    if resume:
        ctl.adopt()
    else:
        say(f"serving {model} for {job} at {url}/v1 (OpenAI API; replicas {ctl.autoscaler.policy.min_replicas}-{ctl.autoscaler.policy.max_replicas})")
        ctl.start()
    while True:
        reason = stop()
        try:
            reason = reason or ctl.step()
        except Exception as exc:  # a hiccup (Ray, Serve, the engine): the next step retries; a dead loop would strand the replicas
            say(f"control step failed, retrying: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        if reason is not None:
            ctl.shutdown(reason)
            close_control(job)
            return reason
        time.sleep(TICK_SECONDS / 2 if ctl.deploying() else TICK_SECONDS)  # look closer while a replica starts


FOLLOW_SECONDS = 0.5  # the long-poll: also how soon a SIGTERM is acted on
STOP_FOLLOW_SECONDS = 2.5  # `ray job stop` kills the driver ~3 s after SIGTERM; the actor finishes the stop anyway


def follow_service(doc: dict[str, Any], say: Callable[[str], None] = print) -> int:
    """The Ray job driver of a served model: hand it to the scheduler actor, print its lines.

    The actor owns the service: this process dying changes nothing for clients. SIGTERM
    (``ray job stop``) or Ctrl-C asks the actor to stop it; ``mcsched cancel`` ends it too,
    and this Ray job then ends STOPPED as the books say cancelled (runtime/states.py).
    """
    job = doc["metadata"]["name"]
    scheduler = get_actor()
    endpoint = Endpoint.from_env()
    resp = ray.get(scheduler.serve_start.remote(doc, endpoint.host, endpoint.port), timeout=60)
    if not resp["ok"]:
        raise AdmissionError(f"{job}: {resp['error']}")
    if not resp["started"]:
        say(f"{job} is already served by the scheduler actor: following it (this driver's exit changes nothing for clients)")
    # The signal only sets a flag: raised from inside ray.get (the follow call), an exception
    # can surface as Ray's SystemError instead; the long-poll is short so the flag is seen at once.
    signalled: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: signalled.append(signum))
    since = 0
    log_id: list[str | None] = [resp.get("log")]

    def follow(wait: float) -> str | None:
        nonlocal since
        try:
            got = ray.get(scheduler.serve_follow.remote(job, since, wait), timeout=wait + 60)
        except ray.exceptions.RayError:  # the actor is restarting: it resumes the service; follow it again
            time.sleep(min(1.0, wait))
            return None
        if got.get("log") != log_id[0]:  # a restarted actor numbers its lines afresh
            log_id[0], since = got.get("log"), 0
            return None
        for line in got["lines"]:
            say(line)
        since = got["next"]
        return got["ended"] if got["known"] else "stopped"

    while not signalled:
        reason = follow(FOLLOW_SECONDS)
        if reason is not None:
            return _end_ray_job(reason)
    # `ray job stop` (SIGTERM) or Ctrl-C: the actor undeploys. The stop is recorded in its
    # serving.json, so it completes even if Ray kills this process in the meantime.
    deadline = time.monotonic() + STOP_FOLLOW_SECONDS
    while True:
        try:
            ray.get(scheduler.serve_stop.remote(job, "stopped"), timeout=10)
            break
        except ray.exceptions.RayError:
            if time.monotonic() > deadline + 10:
                raise
            time.sleep(0.5)
    while time.monotonic() < deadline and follow(min(0.5, max(0.0, deadline - time.monotonic()))) is None:
        pass
    return EXIT_STOPPED
