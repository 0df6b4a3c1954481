"""Drain: a cordoned cloud takes no new work; its running work stays, or moves by policy.

The engine's own cordon (``Engine.drain``), so that a GPU freed on a cordoned cloud is never
given to a queued job, not even for an instant (the node reconciler's clamp allowed that).
"""

from __future__ import annotations

import pytest

from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.events import Answered, Cordoned, Preempted
from tests.builders import a_job, recording_engine, two_clouds
from tests.test_engine import assert_clean


def test_a_cordoned_cloud_gets_no_new_work_and_keeps_what_runs() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=0, oci_h100=16))
    engine.submit(a_job().named("running").gpus(8).obj())
    assert engine.drain("oci") == []
    assert engine.status("running").cloud == "oci"  # the finish policy: it stays
    d = engine.submit(a_job().named("new").gpus(8).obj())
    assert d.outcome == "queued" and "oci cordoned" in (d.detail or "")
    assert "oci is cordoned" in (engine.status("new").waiting or "")
    engine.release("running")  # a GPU freed on the cordoned cloud is not given to the queue
    assert engine.status("new").outcome == "queued"
    engine.drain("oci", on=False)
    assert engine.status("new").cloud == "oci"
    assert_clean(events)


def test_a_cordoned_holder_declines_every_offer_so_work_spills_and_api_work_waits() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=16, oci_h100=16))
    engine.drain("azure")
    d = engine.submit(a_job().named("train").gpus(8).obj())
    assert d.cloud == "oci"  # offered first all the same: the holder declined, cordoned
    assert [(e.answer, e.reason) for e in events if isinstance(e, Answered) and e.job == "train"] == [("declined", "cordoned")]
    api = engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(10).obj())
    assert api.outcome == "queued" and "cordoned" in (api.detail or "")  # never off Azure, never preempting there
    engine.drain("azure", on=False)
    assert engine.status("api").cloud == "azure"
    assert_clean(events)


def test_drain_with_move_evicts_movable_work_through_the_gate_and_keeps_pinned_work() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=16, oci_h100=16))
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).obj())
    engine.submit(a_job().named("train").gpus(8).obj())
    assert (engine.status("api").cloud, engine.status("train").cloud) == ("azure", "azure")
    assert engine.drain("azure", move=True) == ["train"]
    assert [(e.job, e.reason) for e in events if isinstance(e, Preempted)] == [("train", "drained")]
    assert engine.status("train").cloud == "oci"  # re-placed: offered to the holder, which declined (cordoned)
    assert engine.status("api").cloud == "azure"  # pinned work stays
    assert_clean(events)


def test_the_cordon_is_in_the_event_stream_and_survives_a_restore() -> None:
    engine, events, clock = recording_engine(two_clouds(azure_h100=0, oci_h100=16))
    engine.drain("oci")
    assert [e for e in events if isinstance(e, Cordoned)] == [Cordoned(0.0, "oci", True)]
    restored = Engine.restore(engine.catalog, engine.contract, clock, events)
    assert restored.submit(a_job().named("after").gpus(8).obj()).outcome == "queued"


def test_drain_refuses_an_unknown_cloud_and_move_with_undo() -> None:
    engine, events, _ = recording_engine(two_clouds())
    with pytest.raises(AdmissionError, match="unknown cloud 'nope'"):
        engine.drain("nope")
    with pytest.raises(AdmissionError, match="--move"):
        engine.drain("oci", on=False, move=True)
    assert not [e for e in events if isinstance(e, Cordoned)]
