"""The GC pause around bulk work always puts the collector back as it found it."""

from __future__ import annotations

import gc

import pytest

from scheduler.errors import AdmissionError
from scheduler.gcpause import no_gc
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
