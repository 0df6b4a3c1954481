"""When the serving controller asks for a replica and when it gives one back."""

from __future__ import annotations

from scheduler.runtime.serve.policy import Autoscaler, ScalingPolicy, Step


def scaler(min_r: int = 1, max_r: int = 4, target: float = 2.0, delay: float = 10.0) -> Autoscaler:
    return Autoscaler(ScalingPolicy(min_r, max_r, target, delay, look_back_seconds=2.0))


def test_below_min_asks_for_a_replica_one_at_a_time() -> None:
    a = scaler(min_r=2)
    assert a.decide(0.0, ready=0, pending=0) is Step.UP
    assert a.decide(0.0, ready=0, pending=1) is Step.HOLD  # one placement request in flight at a time
    assert a.decide(0.0, ready=1, pending=0) is Step.UP


def test_load_above_target_scales_up_to_max_only() -> None:
    a = scaler(max_r=3)
    a.observe(0.0, 7)  # ceil(7 / 2) = 4 wanted, 3 allowed
    assert a.desired() == 3
    assert a.decide(0.0, ready=1, pending=0) is Step.UP
    assert a.decide(0.0, ready=2, pending=0) is Step.UP
    assert a.decide(0.0, ready=3, pending=0) is Step.HOLD


def test_the_look_back_window_smooths_a_spike_away() -> None:
    a = scaler()
    a.observe(0.0, 20)
    for t in (1.0, 2.0, 3.0):
        a.observe(t, 0)
    assert a.load() == 0 and a.decide(3.0, ready=1, pending=0) is Step.HOLD


def test_scale_down_waits_for_the_cool_down_and_steps_one_at_a_time() -> None:
    a = scaler(delay=10.0)
    a.observe(0.0, 0)
    assert a.decide(0.0, ready=3, pending=0) is Step.HOLD
    assert a.decide(9.0, ready=3, pending=0) is Step.HOLD
    assert a.decide(10.0, ready=3, pending=0) is Step.DOWN
    assert a.decide(11.0, ready=2, pending=0) is Step.HOLD  # the next step needs another full cool-down
    assert a.decide(20.0, ready=2, pending=0) is Step.DOWN
    assert a.decide(40.0, ready=1, pending=0) is Step.HOLD  # never below min


def test_load_coming_back_resets_the_cool_down() -> None:
    a = scaler(delay=10.0)
    a.observe(0.0, 0)
    a.decide(0.0, ready=2, pending=0)
    a.observe(5.0, 4)  # back to target x 2 replicas
    assert a.decide(5.0, ready=2, pending=0) is Step.HOLD
    a.observe(8.0, 0)
    a.observe(9.0, 0)
    assert a.decide(9.0, ready=2, pending=0) is Step.HOLD and a.decide(18.9, ready=2, pending=0) is Step.HOLD
    assert a.decide(19.0, ready=2, pending=0) is Step.DOWN
