"""``python -m scheduler run JOB.yaml``: the Ray job driver for one mcsched job.

The driver is a small controller that converges its job's Ray work on the scheduler's
books (the desired state), the way Kueue suspends and re-admits a Workload:

    WAITING ──placed──► RESERVING ──gang ready──► RUNNING ──done──► DONE
       ▲                    │                        │
       └──── queued ◄───────┴──── evicted/moved ◄────┘   (moved: reserve the new pool at once)

It long-polls its job's assignment version from the scheduler actor (``wait_change``) while
it waits for a gang or for the work, so an eviction reaches it within milliseconds: it kills
the workload actor, removes the placement group (so the preemptor's gang gets those Ray
resources), and either reserves the new pool and resumes from the last checkpoint (a
*move*: the Ray job stays RUNNING and its log shows both placements) or waits in mcsched's
queue (never inside Ray). A placed job waits for its gang as long as the books say it is
placed: the reconciler, not a timeout, deals with a gang Ray cannot grant.

``JobDriver`` is the pure state machine (events in, actions out; unit-tested without Ray);
``run_job`` is its Ray shell.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from scheduler.decision import Decision
from scheduler.errors import AdmissionError
from scheduler.runtime.states import EXIT_CODES, stop_own_ray_job

POLL_SECONDS = 5.0  # wait_change timeout: also how often a driver renews its lease
#: An evicted job's work gets this long to checkpoint and exit before it is killed (Kubernetes'
#: default too); a job sets its own with ``spec.terminationGracePeriodSeconds``.
DEFAULT_GRACE_SECONDS = 30.0
WAIT_SLICE = 0.5  # ray.wait slice, so a SIGTERM is acted on promptly
#: How long a driver whose workload died (no error of its own) waits for the books to move the
#: job: the GCS sees a killed node dead within ~11 s (cluster.HEALTH_CHECK), the scheduler on its
#: next reconcile tick; with slack for a loaded machine.
NODE_LOSS_SECONDS = 30.0


def grace_seconds(spec: dict[str, Any]) -> float:
    grace = spec.get("terminationGracePeriodSeconds")
    return DEFAULT_GRACE_SECONDS if grace is None else float(grace)


class Phase(StrEnum):
    WAITING = "waiting"  # queued in mcsched (no Ray resources held)
    RESERVING = "reserving"  # placed: the gang (placement group) is requested, not yet granted
    RUNNING = "running"  # the workload runs in the gang
    DONE = "done"


@dataclass(frozen=True, slots=True)
class View:
    """What the scheduler says about the job: its decision, placement attempt and version."""

    version: int
    attempt: int
    decision: Decision

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> View:
        return cls(int(d["version"]), int(d["attempt"]), Decision.from_dict(d["decision"]))

    @property
    def where(self) -> str:
        return f"{self.decision.cloud}/{self.decision.region}"


# ---------------------------------------------------------------------- events (in)


@dataclass(frozen=True, slots=True)
class Changed:
    view: View


@dataclass(frozen=True, slots=True)
class GangReady:
    pass


@dataclass(frozen=True, slots=True)
class WorkStarted:
    node_id: str
    assigned: dict[str, float]


@dataclass(frozen=True, slots=True)
class WorkDone:
    exit_code: int


@dataclass(frozen=True, slots=True)
class WorkFailed:
    error: str


@dataclass(frozen=True, slots=True)
class Signalled:
    pass


Event = Changed | GangReady | WorkStarted | WorkDone | WorkFailed | Signalled

# ---------------------------------------------------------------------- actions (out)


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Reserve:
    view: View


@dataclass(frozen=True, slots=True)
class Start:
    view: View


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the workload (if any) and remove the gang (if any).

    ``graceful`` (an eviction, as Kubernetes evicts a pod): the work is told to stop and gets
    the job's grace period to checkpoint before it is killed; otherwise it is killed at once.
    """

    graceful: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    attempt: int
    phase: str  # reserved | running | stopped


@dataclass(frozen=True, slots=True)
class End:
    attempt: int | None  # None: whatever the job holds now (its work is complete)
    reason: str


@dataclass(frozen=True, slots=True)
class Exit:
    code: int


Action = Say | Reserve | Start | Stop | Report | End | Exit


@dataclass
class JobDriver:
    """The pure state machine of one job's driver."""

    name: str
    view: View
    phase: Phase = Phase.WAITING
    exit_code: int | None = None
    _last_reason: str | None = field(default=None, repr=False)

    def start(self) -> list[Action]:
        """After the submission: the first decision line, then converge on it."""
        first = self.view
        acts: list[Action] = [Say(first.decision.line())]
        self._last_reason = first.decision.reason
        return acts + self._converge(first, announce=False)

    def on(self, event: Event) -> list[Action]:
        if self.phase is Phase.DONE:
            return []
        if isinstance(event, Changed):
            if event.view.version == self.view.version:
                return []  # the long-poll timed out: nothing changed
            return self._converge(event.view, announce=True)
        if isinstance(event, GangReady) and self.phase is Phase.RESERVING:
            return [Report(self.view.attempt, "reserved"), Start(self.view)]
        if isinstance(event, WorkStarted) and self.phase is Phase.RESERVING:
            self.phase = Phase.RUNNING
            assigned = ", ".join(f"{k}={v:g}" for k, v in sorted(event.assigned.items()))
            return [
                Report(self.view.attempt, "running"),
                Say(f"{self.name} running on {self.view.where} (Ray node {event.node_id[:12]}, resources {assigned})"),
            ]
        if isinstance(event, WorkDone) and self.phase is Phase.RUNNING:
            ok = event.exit_code == 0
            return self._finish(
                [Stop(), End(None if ok else self.view.attempt, "finished" if ok else "failed")],
                f"{self.name} {'finished' if ok else f'failed (exit {event.exit_code})'} on {self.view.where}; capacity released",
                event.exit_code,
            )
        if isinstance(event, WorkFailed) and self.phase is Phase.RUNNING:
            return self._finish(
                [Say(f"{self.name} failed on {self.view.where}: {event.error}"), Stop(), End(self.view.attempt, "failed")],
                f"{self.name} failed; capacity released",
                EXIT_CODES["failed"],
            )
        if isinstance(event, Signalled):
            held = self.phase in (Phase.RESERVING, Phase.RUNNING)
            return self._finish(
                [Stop(), End(self.view.attempt if held else None, "stopped")],
                f"{self.name}: stopped (ray job stop); its capacity is released",
                EXIT_CODES["stopped"],
            )
        return []

    def _finish(self, acts: list[Action], line: str, code: int) -> list[Action]:
        self.phase = Phase.DONE
        self.exit_code = code
        return [*acts, Say(line), Exit(code)]

    def _converge(self, new: View, announce: bool) -> list[Action]:
        """Numbered steps: 1 leave the old placement if it is no longer ours, 2 follow the new one."""
        old, self.view = self.view, new
        d = new.decision
        acts: list[Action] = []
        held = self.phase in (Phase.RESERVING, Phase.RUNNING)
        if d.outcome not in ("placed", "queued"):  # ended by the scheduler (mcsched cancel, or a repair)
            return self._finish([Stop()], f"{self.name} {d.outcome} by the scheduler; its Ray work is stopped", EXIT_CODES.get(d.outcome, 1))
        # 1. the placement we hold (or reserve) was taken away: stop its work, return its gang
        if held and (d.outcome != "placed" or new.attempt != old.attempt):
            why = f"now {d.outcome}" if d.outcome != "placed" else f"moving to {new.where}"
            acts += [Say(f"{self.name} evicted from {old.where} ({why}); stopping its work"), Stop(graceful=self.phase is Phase.RUNNING),
                     Report(old.attempt, "stopped")]  # fmt: skip
            self.phase = Phase.WAITING
            held = False
        # 2. follow the books
        if d.outcome == "placed":
            if not held:
                if announce:
                    acts.append(Say(d.line()))
                acts.append(Reserve(new))
                self.phase = Phase.RESERVING
        else:  # queued: wait in mcsched's queue, holding nothing in Ray
            if announce and d.reason != self._last_reason:
                acts.append(Say(f"{self.name} queued: {d.reason}: {d.detail}"))
            self._last_reason = d.reason
        return acts


# ---------------------------------------------------------------------- the Ray shell


class _Signals:
    def __init__(self) -> None:
        self.raised = False
        signal.signal(signal.SIGTERM, self._on)
        signal.signal(signal.SIGINT, self._on)

    def _on(self, _signum: int, _frame: Any) -> None:
        self.raised = True


def run_job(doc: dict[str, Any], source: str, checkpoint_root: Path, say: Callable[[str], None] = print) -> int:
    """The driver process: drive one job until it ends; ``ray job stop`` (SIGTERM) ends it as stopped."""
    if doc["spec"].get("serve") is not None:  # a served model: the scheduler actor owns it; this driver follows
        from scheduler.runtime.serve.controller import follow_service

        return follow_service(doc, say)
    from scheduler.runtime.workload import pools_here, prestart

    if pools_here():  # first: Ray starts a worker for the Workload while the placement is decided
        prestart.remote()
    from scheduler.runtime.actor import get_actor

    signals = _Signals()
    code = drive(get_actor(), doc, source, checkpoint_root / doc["metadata"]["name"], say, stop_requested=lambda: signals.raised)
    if code == EXIT_CODES["cancelled"] and stop_own_ray_job(lambda: signals.raised):  # Ray says STOPPED, as the books say cancelled
        say(f"{doc['metadata']['name']}: its Ray job is stopped (mcsched cancel)")
    return code


def forget_old_checkpoint(resp: dict[str, Any], name: str, checkpoint_dir: Path) -> None:
    """A job submitted afresh starts at step 0: the checkpoint there belongs to an earlier job of
    the same name that ended (cancelled, stopped, failed) mid-run. A driver re-attaching to its
    live job (the service did not count it fresh) keeps it, to resume."""
    if name in resp.get("fresh", ()):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)


def drive(
    actor: Any,
    doc: dict[str, Any],
    source: str,
    checkpoint_dir: Path,
    say: Callable[[str], None],
    *,
    stop_requested: Callable[[], bool] = lambda: False,
    observe: Callable[[Action], None] | None = None,
) -> int:
    """Submit the job (taking its lease) and converge on its decisions until it ends; the exit code.

    ``observe`` sees every action as it is carried out (the enforcement benchmark times them).
    """
    import ray

    resp = ray.get(actor.submit.remote([doc], True))
    if not resp["ok"]:
        raise AdmissionError(f"{source}: {resp['error']}")
    forget_old_checkpoint(resp, doc["metadata"]["name"], checkpoint_dir)
    core = JobDriver(doc["metadata"]["name"], View.from_wire(resp["views"][0]))
    shell = _RayShell(actor, core, doc, checkpoint_dir, say, observe)
    shell.perform(core.start())
    while core.phase is not Phase.DONE:
        if stop_requested():
            shell.perform(core.on(Signalled()))
            break
        shell.step()
    return core.exit_code if core.exit_code is not None else 1


class _RayShell:
    """Carries out the state machine's actions with Ray and turns Ray's answers into events."""

    def __init__(
        self,
        actor: Any,
        core: JobDriver,
        doc: dict[str, Any],
        checkpoint_dir: Path,
        say: Callable[[str], None],
        observe: Callable[[Action], None] | None = None,
    ) -> None:
        import ray

        self.ray = ray
        self.actor = actor
        self.core = core
        self.spec = {**doc["spec"], "name": core.name, "cls": doc["spec"]["class"]}
        self.checkpoint_dir = checkpoint_dir
        self.say = say
        self.observe = observe
        self.gang: Any = None
        self.gang_ready: Any = None
        self.work: Any = None
        self.work_started: Any = None
        self.work_done: Any = None
        self.change: Any = self._poll()

    def _poll(self, timeout: float = POLL_SECONDS) -> Any:
        return self.actor.wait_change.remote(self.core.name, self.core.view.version, timeout)

    def step(self) -> None:
        ray = self.ray
        refs = [r for r in (self.change, self.gang_ready, self.work_started, self.work_done) if r is not None]
        ready, _ = ray.wait(refs, num_returns=1, timeout=WAIT_SLICE)
        if not ready:
            return
        ref = ready[0]
        if ref is self.work_done and self.work_started is not None:
            ref = self.work_started  # the start first (a short work can finish before `where` answers): done comes next step
        if ref is self.change:
            try:
                view = View.from_wire(ray.get(ref))
            except ray.exceptions.RayError:  # the actor is restarting: ask again
                self.change = self._poll()
                return
            events: list[Event] = [Changed(view)]
        elif ref is self.gang_ready:
            self.gang_ready = None
            events = [GangReady()]
        elif ref is self.work_started:
            self.work_started = None
            try:
                where = ray.get(ref)
                events = [WorkStarted(where["node_id"], where["assigned"])]
            except ray.exceptions.RayError as exc:
                events = self._work_error(exc)
        else:
            self.work_done = None
            try:
                events = [WorkDone(int(ray.get(ref).get("exit_code", 0)))]
            except ray.exceptions.RayError as exc:
                events = self._work_error(exc)
        for event in events:
            self.perform(self.core.on(event))
        if ref is self.change or self.change is None:
            self.change = self._poll()

    def _work_error(self, exc: Exception) -> list[Event]:
        """A workload error is a failure only if the books still have this placement:
        otherwise the work was killed because the job was evicted (by us or the reconciler).

        A workload that died without an error of its own (its process or its whole node is
        gone) may be the first sign of a lost node, which the scheduler sees only after the
        GCS's health check: the books are given ``NODE_LOSS_SECONDS`` to move the job before
        the death counts as the job's failure.
        """
        ray = self.ray
        system = isinstance(exc, ray.exceptions.RayActorError) and not isinstance(exc, ray.exceptions.RayTaskError)
        wait = NODE_LOSS_SECONDS if system else 0.0
        if system:
            self.say(f"{self.core.name}: its work on {self.core.view.where} died; waiting up to {wait:g}s for the scheduler")
        fresh = View.from_wire(ray.get(self.actor.wait_change.remote(self.core.name, self.core.view.version, wait), timeout=wait + 120))
        if fresh.version != self.core.view.version:
            return [Changed(fresh)]
        cause = getattr(exc, "cause", None)
        return [WorkFailed(str(cause or exc).strip().splitlines()[-1] if str(cause or exc).strip() else type(exc).__name__)]

    def perform(self, actions: list[Action]) -> None:
        ray = self.ray
        for act in actions:
            if self.observe is not None:
                self.observe(act)
            if isinstance(act, Say):
                self.say(act.text)
            elif isinstance(act, Reserve):
                self._reserve(act.view)
            elif isinstance(act, Start):
                self._start(act.view)
            elif isinstance(act, Stop):
                if act.graceful:
                    self._drain()
                self._stop()
            elif isinstance(act, Report):
                self.actor.report.remote(self.core.name, act.attempt, act.phase)
            elif isinstance(act, End):
                ray.get(self.actor.end.remote(self.core.name, act.attempt, act.reason))
            # Exit: the loop in run_job ends on Phase.DONE

    def _reserve(self, view: View) -> None:
        from ray.util.placement_group import placement_group

        from scheduler.runtime.reconciler import gang_name
        from scheduler.runtime.resources import bundles, pool_resource

        d = view.decision
        assert d.cloud and d.region
        resource = pool_resource(d.cloud, d.region, d.gpu_type)
        name = gang_name(self.core.name, view.attempt)
        try:
            self.gang = placement_group(bundles(resource, d.gpus), strategy="PACK", name=name)
        except self.ray.exceptions.RaySystemError as exc:
            if "already exists" not in str(exc):
                raise
            # A second driver of one job (the same job submitted twice): the first one holds this attempt's gang.
            raise AdmissionError(f"job {self.core.name!r} is already run by another driver (its gang {name} exists): this one stops") from None
        self.gang_ready = self.gang.ready()
        # Bound at once (before Ray grants it), so a restarted actor knows whose gang this is.
        self.ray.get(self.actor.bind.remote(self.core.name, self.gang.id.hex(), view.attempt))

    def _start(self, view: View) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from scheduler.runtime.resources import bundles, pool_resource
        from scheduler.runtime.workload import Workload

        d = view.decision
        assert d.cloud and d.region
        resource = pool_resource(d.cloud, d.region, d.gpu_type)
        self.work = Workload.options(  # type: ignore[attr-defined]
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.gang, placement_group_bundle_index=0),
            resources={resource: bundles(resource, d.gpus)[0][resource]},
        ).remote()
        self.work_started = self.work.where.remote()
        self.work_done = self.work.run.remote(self.spec, {"cloud": d.cloud, "region": d.region}, str(self.checkpoint_dir))

    def _drain(self) -> None:
        """Tell the work to stop and wait up to the grace period for it to checkpoint and exit
        (its gang is held meanwhile: whoever takes the capacity waits for the checkpoint)."""
        if self.work is None or self.work_done is None:
            return
        grace = grace_seconds(self.spec)
        started = time.monotonic()
        with contextlib.suppress(Exception):  # already dead: nothing to drain
            self.work.request_stop.remote()
            done, _ = self.ray.wait([self.work_done], timeout=grace)
            took = time.monotonic() - started
            if done:
                self.say(f"{self.core.name}: its work stopped {took:.1f}s after being told (grace period {grace:g}s)")
            else:
                self.say(f"{self.core.name}: grace period of {grace:g}s over; killing its work")
        self.work_done = None  # its answer is the drain's, not a completion of the job

    def _stop(self) -> None:
        from ray.util.placement_group import remove_placement_group

        if self.work is not None:
            with contextlib.suppress(Exception):  # already dead
                self.ray.kill(self.work, no_restart=True)
        if self.gang is not None:
            with contextlib.suppress(Exception):  # already removed (by the reconciler) or the cluster is gone
                remove_placement_group(self.gang)
        self.work = self.work_started = self.work_done = self.gang = self.gang_ready = None
