"""The exporter's numbers follow the event stream exactly, with bounded labels."""

from __future__ import annotations

from prometheus_client import generate_latest

from scheduler.metrics import Metrics
from tests.builders import a_contract, a_job, recording_engine, two_clouds


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_metrics_follow_placements_offers_queue_and_preemption() -> None:
    engine, _, clock = recording_engine(two_clouds(azure_h100=8, oci_h100=8))
    m = Metrics()
    engine.subscribe(m)
    engine.announce()
    engine.submit(a_job().named("t1").gpus(8).obj())  # azure accepts
    engine.submit(a_job().named("t2").gpus(8).obj())  # declined -> oci
    engine.submit(a_job().named("t3").gpus(8).obj())  # queued
    clock.advance(3600)
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(9).obj())  # preempts t1
    assert value(m, "mcsched_jobs_submitted_total", **{"class": "training"}) == 3
    assert (
        value(
            m,
            "mcsched_placements_total",
            cloud="oci",
            region="us-ashburn-1",
            gpu_type="H100",
            **{"class": "training"},
            via="after-decline",
        )
        == 1
    )
    assert (
        value(
            m,
            "mcsched_placements_total",
            cloud="azure",
            region="eastus",
            gpu_type="H100",
            **{"class": "api-serving"},
            via="preemption",
        )
        == 1
    )
    assert value(m, "mcsched_rofr_offers_total", holder="azure", answer="declined", reason="no-capacity") >= 2
    assert value(m, "mcsched_preemptions_total", reason="pinned-job") == 1
    assert value(m, "mcsched_gpus", cloud="azure", region="eastus", gpu_type="H100", state="allocated") == 8
    assert value(m, "mcsched_gpus", cloud="oci", region="us-ashburn-1", gpu_type="H100", state="capacity") == 8
    assert value(m, "mcsched_pending_jobs", **{"class": "training"}, reason="no-capacity") == 2  # t3 and the evicted t1
    assert value(m, "mcsched_cost_usd_total", cloud="azure") == 3.4 * 8  # t1 ran one hour on azure
    assert value(m, "mcsched_contract_violations_total", rule="rofr-order") == 0
    engine.release("t2")
    assert value(m, "mcsched_pending_jobs", **{"class": "training"}, reason="no-capacity") == 1
    engine.set_backend("oci", up=False)
    assert value(m, "mcsched_backend_up", cloud="oci") == 0


def test_no_job_name_ever_becomes_a_label() -> None:
    engine, _, _ = recording_engine(two_clouds(), a_contract())
    m = Metrics()
    engine.subscribe(m)
    engine.announce()
    for i in range(20):
        engine.submit(a_job().named(f"secret-job-{i}").gpus(4).obj())
    text = generate_latest(m.registry).decode()
    assert "secret-job" not in text
    assert all(line.startswith(("#", "mcsched_")) for line in text.splitlines() if line)


def test_violation_counter_is_driven_by_the_live_checker() -> None:
    from scheduler.events import Placed, Submitted

    engine, _, _ = recording_engine(two_clouds())
    m = Metrics()
    m(engine.configured_event())
    job = a_job().named("x").obj()
    m(Submitted(0.0, "x", "training", 8, "H100", 0, job.to_dict()))
    m(Placed(0.0, "x", 1, "training", "oci", "us-ashburn-1", "H100", 8, 2.9, "after-decline", 0.0))
    assert value(m, "mcsched_contract_violations_total", rule="rofr-order") == 1


def test_serve_reports_set_replicas_and_count_requests_ttft_and_scale_steps_with_bounded_labels() -> None:
    m = Metrics()
    m.serve.apply(
        {"replicas": {"model": "llama", "pools": [["azure", "eastus", 2], ["azure", "westus3", 1]]}, "scale": [["llama", "up"]]}
    )
    m.serve.apply({"requests": [["llama", "200", 5], ["none", "400", 2]], "ttft": {"llama": [0.2, 0.4]}})
    m.serve.apply(
        {"replicas": {"model": "llama", "pools": [["azure", "eastus", 1]]}, "scale": [["llama", "down"], ["llama", "sideways"]]}
    )
    assert value(m, "mcsched_serve_replicas", model="llama", cloud="azure", region="eastus") == 1
    assert value(m, "mcsched_serve_replicas", model="llama", cloud="azure", region="westus3") == 0  # gone from the report
    assert value(m, "mcsched_serve_requests_total", model="llama", code="200") == 5
    assert value(m, "mcsched_serve_requests_total", model="none", code="400") == 2
    assert value(m, "mcsched_serve_ttft_seconds_count", model="llama") == 2
    assert abs(value(m, "mcsched_serve_ttft_seconds_sum", model="llama") - 0.6) < 1e-9
    assert value(m, "mcsched_serve_scale_events_total", model="llama", direction="up") == 1
    assert value(m, "mcsched_serve_scale_events_total", model="llama", direction="down") == 1
    # Hostile or broken reports add no label values.
    m.serve.apply(
        {
            "requests": [["a model with spaces", "200", 1], ["llama", "2000", 1], ["llama", "abc", 1], ["llama", "200", -4]],
            "ttft": {"bad model!": [1.0], "llama": ["x", -1, 1e12]},
        }
    )
    from prometheus_client.parser import text_string_to_metric_families

    # compare label values, not the text: a sample's timestamp may well contain "2000"
    families = text_string_to_metric_families(generate_latest(m.registry).decode())
    labels = {v for f in families for sample in f.samples for v in sample.labels.values()}
    assert not labels & {"a model with spaces", "2000", "abc", "bad model!"}
    assert value(m, "mcsched_serve_requests_total", model="llama", code="200") == 5
    assert value(m, "mcsched_serve_ttft_seconds_count", model="llama") == 2


def test_the_endpoint_serves_scrapes_and_refuses_writes() -> None:
    import urllib.error
    import urllib.request

    from scheduler.metrics import serve
    from scheduler.runtime.cluster import free_port

    m = Metrics()
    engine, _, _ = recording_engine(two_clouds())
    engine.subscribe(m)
    engine.announce()
    port = free_port()
    serve(m, port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200 and b"mcsched_backend_up" in r.read()
    for method in ("POST", "PUT", "DELETE"):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"mcsched_backend_up 0", method=method)
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError(f"{method} was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 405
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert 'mcsched_backend_up{cloud="azure"} 1.0' in r.read().decode()


def test_a_queued_job_moves_between_pending_series_and_leaves_them_once() -> None:
    """The sink remembers each queued job's series: a re-queue for another reason moves it, a
    placement or a dequeue takes it out, and an event of a subclass counts as its base's."""
    from scheduler.events import Dequeued, Placed, Queued, Submitted

    class LatePlaced(Placed, frozen=True):
        pass

    engine, _, _ = recording_engine(two_clouds())
    m = Metrics()
    m(engine.configured_event())
    for name in ("a", "b"):
        m(Submitted(0.0, name, "training", 8, "H100", 0, a_job().named(name).obj().to_dict()))
        m(Queued(0.0, name, 1, "training", "no-capacity", "H100 0/8 free"))
    pending = {"class": "training", "reason": "no-capacity"}
    assert value(m, "mcsched_pending_jobs", **pending) == 2
    m(Queued(1.0, "a", 2, "training", "behind-plan", "a planned start holds the pool"))
    assert value(m, "mcsched_pending_jobs", **pending) == 1
    assert value(m, "mcsched_pending_jobs", **{"class": "training", "reason": "behind-plan"}) == 1
    m(LatePlaced(2.0, "a", 2, "training", "oci", "us-ashburn-1", "H100", 8, 2.9, "after-decline", 2.0))
    m(Dequeued(3.0, "b", "training", "cancelled"))
    m(Dequeued(3.0, "b", "training", "cancelled"))  # a second leave changes nothing
    assert value(m, "mcsched_pending_jobs", **pending) == 0
    assert value(m, "mcsched_pending_jobs", **{"class": "training", "reason": "behind-plan"}) == 0
    assert value(m, "mcsched_running_jobs", cloud="oci", **{"class": "training"}) == 1
    assert value(m, "mcsched_jobs_ended_total", **{"class": "training", "reason": "cancelled"}) == 2
    assert value(m, "mcsched_gpus_idle_for_plan", cloud="oci", region="us-ashburn-1", gpu_type="H100") == 0
