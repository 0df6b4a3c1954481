"""The GC pause around bulk work always puts the collector back as it found it."""

from __future__ import annotations

import gc

import pytest

from scheduler.cli.gcpause import no_gc
from scheduler.errors import AdmissionError
from tests.builders import a_job, recording_engine, two_clouds


def test_paused_inside_restored_after_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), no_gc():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_caller_that_turned_it_off_keeps_it_off() -> None:
    gc.disable()
    try:
        with no_gc():
            with no_gc():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_batch_placement_leaves_the_collector_on_whether_it_succeeds_or_is_refused() -> None:
    engine, _events, _clock = recording_engine(two_clouds())
    engine.place_many([a_job().named("a").gpus(8).obj(), a_job().named("b").gpus(8).obj()])
    assert gc.isenabled()
    with pytest.raises(AdmissionError):
        engine.place_many([a_job().named("c").gpus(8).obj(), a_job().named("c").gpus(8).obj()])
    assert gc.isenabled() and "c" not in engine.jobs


def test_what_the_pause_leaves_alive_is_old_and_cyclic_garbage_is_still_collected() -> None:
    """Survivors of the pause go to the oldest generation (no young scan of them all at the next
    allocation); a cycle made during the pause is still freed by a full collection."""
    import weakref

    class Node:
        other: object = None

    starts: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            starts.append(info["generation"])

    gc.collect()
    gc.callbacks.append(seen)
    try:
        with no_gc():
            alive = [[i] for i in range(5_000)]  # far more tracked objects than a young generation holds
            a, b = Node(), Node()
            a.other, b.other = b, a
            dead = weakref.ref(a)
            del a, b
        more = [[i] for i in range(100)]  # allocations after the pause
        assert starts == [], "the survivors were left young: the next allocations scanned them"
        gc.collect()
        assert dead() is None
        assert len(alive) == 5_000 and len(more) == 100
    finally:
        gc.callbacks.remove(seen)
