"""The driver's state machine without Ray: events in, actions out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheduler.decision import Decision
from scheduler.runtime.driver import (
    DEFAULT_GRACE_SECONDS,
    Changed,
    End,
    Exit,
    GangReady,
    JobDriver,
    Phase,
    Report,
    Reserve,
    Say,
    Signalled,
    Start,
    Stop,
    View,
    WorkDone,
    WorkFailed,
    WorkStarted,
    grace_seconds,
)


def view(version: int, attempt: int, outcome: str = "placed", cloud: str | None = "azure", **kw: Any) -> View:
    region = {"azure": "eastus", "oci": "us-ashburn-1", None: None}[cloud]
    d = Decision("train", "training", outcome, "H100", 16, "azure", "accepted", "", cloud=cloud if outcome == "placed" else None,
                 region=region if outcome == "placed" else None, price=3.4 if outcome == "placed" else None, attempt=attempt, **kw)
    return View(version, attempt, d)


def kinds(actions: list[Any]) -> list[str]:
    return [type(a).__name__ for a in actions]


def running(d: JobDriver) -> None:
    d.on(GangReady())
    d.on(WorkStarted("node", {"mcsched_azure__eastus__H100": 8.0}))
    assert d.phase is Phase.RUNNING


def test_placed_job_reserves_then_starts_then_finishes() -> None:
    d = JobDriver("train", view(9, 1))
    acts = d.start()
    assert kinds(acts) == ["Say", "Reserve"] and d.phase is Phase.RESERVING
    assert "placed train on azure/eastus" in acts[0].text  # type: ignore[union-attr]
    assert d.on(GangReady()) == [Report(1, "reserved"), Start(d.view)]
    acts = d.on(WorkStarted("abcdef0123456789", {"mcsched_azure__eastus__H100": 8.0}))
    assert acts[0] == Report(1, "running") and "resources mcsched_azure__eastus__H100=8" in acts[1].text  # type: ignore[union-attr]
    acts = d.on(WorkDone(0))
    assert acts[:2] == [Stop(), End(None, "finished")] and acts[-1] == Exit(0) and d.phase is Phase.DONE
    assert d.on(Changed(view(20, 1, "finished", None))) == []  # done is final


def test_a_long_poll_timeout_changes_nothing() -> None:
    d = JobDriver("train", view(9, 1))
    d.start()
    assert d.on(Changed(view(9, 1))) == []


def test_an_eviction_to_another_cloud_is_a_move_not_a_kill() -> None:
    d = JobDriver("train", view(9, 1))
    d.start()
    running(d)
    acts = d.on(Changed(view(17, 2, cloud="oci", via="after-decline")))
    assert kinds(acts) == ["Say", "Stop", "Report", "Say", "Reserve"]
    assert "evicted from azure/eastus (moving to oci/us-ashburn-1)" in acts[0].text  # type: ignore[union-attr]
    assert acts[2] == Report(1, "stopped")  # the old attempt's work is stopped and its gang gone
    assert isinstance(acts[4], Reserve) and acts[4].view.attempt == 2
    assert d.phase is Phase.RESERVING and d.exit_code is None  # the Ray job keeps running


def test_evicted_and_queued_waits_without_ray_resources_then_resumes() -> None:
    d = JobDriver("train", view(9, 1))
    d.start()
    running(d)
    acts = d.on(Changed(view(16, 2, "queued", None, reason="no-capacity", detail="H100 0 free")))
    assert kinds(acts) == ["Say", "Stop", "Report", "Say"] and d.phase is Phase.WAITING
    assert "train queued: no-capacity" in acts[-1].text  # type: ignore[union-attr]
    assert d.on(Changed(view(24, 3, "queued", None, reason="no-capacity", detail="H100 0 free"))) == []  # same reason: quiet
    acts = d.on(Changed(view(33, 4, cloud="oci")))
    assert kinds(acts) == ["Say", "Reserve"] and d.phase is Phase.RESERVING


def test_an_eviction_while_reserving_drops_the_pending_gang() -> None:
    d = JobDriver("train", view(9, 1))
    d.start()
    acts = d.on(Changed(view(17, 2, cloud="oci")))
    assert Stop() in acts and isinstance(acts[-1], Reserve)  # nothing runs yet: nothing to drain


def test_an_evicted_running_job_is_stopped_gracefully_a_cancelled_one_at_once() -> None:
    d = JobDriver("train", view(9, 1))
    d.start()
    running(d)
    assert Stop(graceful=True) in d.on(Changed(view(17, 2, cloud="oci")))
    c = JobDriver("train", view(9, 1))
    c.start()
    running(c)
    assert Stop(graceful=False) in c.on(Changed(view(15, 1, "cancelled", None)))
    assert grace_seconds({}) == DEFAULT_GRACE_SECONDS == 30 and grace_seconds({"terminationGracePeriodSeconds": 5}) == 5


def test_cancel_by_the_scheduler_stops_the_work_and_exits_non_zero() -> None:
    d = JobDriver("train", view(9, 1))
    d.start()
    running(d)
    acts = d.on(Changed(view(15, 1, "cancelled", None)))
    assert Stop() in acts and acts[-1] == Exit(130) and not any(isinstance(a, End) for a in acts)
    assert "cancelled by the scheduler" in next(a.text for a in acts if isinstance(a, Say))


def test_failure_ends_failed_for_the_attempt_it_ran() -> None:
    d = JobDriver("train", view(9, 1))
    d.start()
    running(d)
    acts = d.on(WorkFailed("RuntimeError: injected failure at step 2"))
    assert End(1, "failed") in acts and acts[-1] == Exit(1)
    d2 = JobDriver("train", view(9, 1))
    d2.start()
    running(d2)
    assert End(1, "failed") in d2.on(WorkDone(3)) and d2.exit_code == 3


def test_ray_job_stop_ends_the_job_as_stopped_in_every_phase() -> None:
    for prepare, attempt in ((lambda d: None, 1), (running, 1)):
        d = JobDriver("train", view(9, 1))
        d.start()
        prepare(d)
        acts = d.on(Signalled())
        assert acts[:2] == [Stop(), End(attempt, "stopped")] and acts[-1] == Exit(143)
    q = JobDriver("train", view(8, 1, "queued", None, reason="no-capacity", detail="x"))
    assert kinds(q.start()) == ["Say"] and q.phase is Phase.WAITING
    assert q.on(Signalled())[1] == End(None, "stopped")


class _Ref:
    def __init__(self, value: Any) -> None:
        self.value = value


class _FakeRay:
    """Ray as the driver's shell uses it, with refs that are ready only when the test says so."""

    class exceptions:
        RayError = RuntimeError

    def __init__(self) -> None:
        self.ready: set[int] = set()

    def wait(self, refs: list[_Ref], num_returns: int, timeout: float) -> tuple[list[_Ref], list[_Ref]]:
        done = [r for r in refs if id(r) in self.ready][:num_returns]
        return done, [r for r in refs if r not in done]

    def get(self, ref: _Ref, timeout: float | None = None) -> Any:
        return ref.value


class _Remote:
    def __init__(self, value: Any) -> None:
        self.value = value

    def remote(self, *args: Any) -> _Ref:
        return _Ref(self.value)


def test_a_short_work_that_finishes_before_its_start_is_seen_still_ends_the_job(tmp_path: Path) -> None:
    """Ray may answer `run` before `where`: the start is taken first, then the end (else the job hangs)."""
    from types import SimpleNamespace

    from scheduler.runtime.driver import _RayShell

    core = JobDriver("train", view(9, 1))
    core.start()
    core.on(GangReady())
    actor = SimpleNamespace(wait_change=_Remote({}), report=_Remote(None), end=_Remote({}))
    shell = _RayShell(actor, core, {"spec": {"class": "training"}}, tmp_path, lambda _text: None)
    fake = _FakeRay()
    shell.ray = fake  # type: ignore[assignment]
    shell.work_started = _Ref({"node_id": "n" * 16, "assigned": {"mcsched_azure__eastus__H100": 16.0}})
    shell.work_done = _Ref({"exit_code": 0})
    fake.ready.add(id(shell.work_done))  # the end is ready, the start not yet
    shell._stop = lambda: None  # type: ignore[method-assign]
    for _ in range(3):
        shell.step()
    assert core.phase is Phase.DONE and core.exit_code == 0
