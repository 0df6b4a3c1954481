"""Capacity what-ifs: the geography-respecting zone mapping, pool scaling by hand, --scale-capacity."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.errors import TraceError
from scheduler.loading import load_catalog
from scheduler.paths import default_catalog
from scheduler.sim.capacity import (
    Binding,
    capacity_schedule,
    default_bindings,
    parse_capacity_map,
    parse_scale,
    region_area,
    scale_catalog,
)
from scheduler.sim.simulator import Simulation
from scheduler.sim.summary import summarise
from scheduler.sim.traces import SpotTrace, TraceJob
from tests.builders import a_catalog, a_contract

ZONES = ["us-east-1a", "us-east-1c", "us-east-2a", "us-west-2b", "eu-central-1a"]


def spot(zone: str, data: tuple[int, ...] = (1, 0), gap: float = 10.0) -> SpotTrace:
    return SpotTrace(zone, gap, data)


def mapping(cloud: str) -> dict[str, str]:
    bindings, unused = default_bindings([spot(z) for z in ZONES], load_catalog(default_catalog()), cloud, {"H100"})
    out = {b.zone: "/".join(b.pool[:2]) for b in bindings}
    out.update({u.split(":")[0]: "unused" for u in unused})
    return out


def test_regions_have_areas_from_their_names() -> None:
    assert [region_area(r, "US") for r in ("eastus", "westus3", "southcentralus", "us-ashburn-1", "us-phoenix-1", "US-EAST-04", "abilene-tx")] == [
        "us-east", "us-west", "us-central", "us-east", "us-west", "us-east", "us-central"
    ]
    assert region_area("westeurope", "EU") == "EU"


def test_default_mapping_respects_geography() -> None:
    assert mapping("aws") == {
        "us-east-1a": "aws/us-east-1",  # same region
        "us-east-1c": "aws/us-east-1",
        "us-east-2a": "aws/us-east-1",  # same area (US east)
        "us-west-2b": "aws/us-west-2",
        "eu-central-1a": "aws/eu-central-1",
    }
    assert mapping("azure") == {
        "us-east-1a": "azure/eastus",
        "us-east-1c": "azure/eastus",
        "us-east-2a": "azure/eastus",
        "us-west-2b": "azure/westus3",
        "eu-central-1a": "azure/westeurope",  # the first EU region in catalog order; never a US one
    }
    gcp = mapping("gcp")
    assert gcp["us-east-1a"] == gcp["us-west-2b"] == "gcp/us-central1"  # the nearest US area it has
    assert gcp["eu-central-1a"] == "gcp/europe-west4"


def test_a_cloud_without_the_needed_pools_is_a_clear_error() -> None:
    catalog = load_catalog(default_catalog())
    with pytest.raises(TraceError, match=r"stargate has no H100 pools \(it has GB200, H200\)"):
        default_bindings([spot("us-east-1a")], catalog, "stargate", {"H100"})
    with pytest.raises(TraceError, match="no zone of the capacity trace"):
        default_bindings([spot("eu-central-1a")], a_catalog().cloud("x", {"r1": {"H100": 8}}).obj(), "x", {"H100"})
    with pytest.raises(TraceError, match="not in the catalog"):
        default_bindings([spot("us-east-1a")], catalog, "nimbus", {"H100"})


def test_explicit_capacity_map_is_checked() -> None:
    catalog = load_catalog(default_catalog())
    traces = [spot("us-east-1a")]
    assert parse_capacity_map("us-east-1a=oci/us-ashburn-1/H100", traces, catalog) == [
        Binding("us-east-1a", ("oci", "us-ashburn-1", "H100"), "explicit")
    ]
    for bad, why in [
        ("us-east-1a=oci/us-ashburn-1", "expected zone=cloud/region/gpuType"),
        ("us-east-9z=oci/us-ashburn-1/H100", "no zone 'us-east-9z'"),
        ("us-east-1a=oci/nowhere/H100", "oci has no region 'nowhere' \\(it has us-ashburn-1"),
        ("us-east-1a=nimbus/eastus/H100", "unknown cloud 'nimbus' \\(the catalog has azure, oci"),
        ("us-east-1a=stargate/abilene-tx/H100", "stargate/abilene-tx has no H100 pool \\(it has "),
    ]:
        with pytest.raises(TraceError, match=why):
            parse_capacity_map(bad, traces, catalog)


def test_a_pool_scales_with_the_share_of_its_zones_available() -> None:
    # two zones on a 100-GPU pool, one tick every 10 s: both up, one up, one up, none up.
    zones = [spot("z1", (1, 0, 1, 0)), spot("z2", (1, 1, 0, 0))]
    pool = ("aws", "us-east-1", "H100")
    bindings = [Binding("z1", pool, "explicit"), Binding("z2", pool, "explicit")]
    changes, rules = capacity_schedule(bindings, zones, {pool: 100}, 1.0, 35)
    assert changes == [(0.0, pool, 100), (10.0, pool, 50), (30.0, pool, 0)]
    assert rules[0].effect == "capacity 0..100 of 100 GPUs, mean 57 (57%)"  # (100*10 + 50*20 + 0*5) / 35
    half, _ = capacity_schedule(bindings, zones, {pool: 100}, 0.5, 45)  # half the pool is spot; the series repeats at 40 s
    assert half == [(0.0, pool, 100), (10.0, pool, 75), (30.0, pool, 50), (40.0, pool, 100)]
    with pytest.raises(TraceError, match="--spot-share"):
        capacity_schedule(bindings, zones, {pool: 100}, 1.5, 35)


def test_capacity_loss_evicts_and_replaces_through_the_rofr() -> None:
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 8}}, price=3.4).cloud("oci", {"us-ashburn-1": {"H100": 16}}, price=2.9).obj()
    pool = ("oci", "us-ashburn-1", "H100")
    changes, _ = capacity_schedule([Binding("z", pool, "explicit")], [spot("z", (1, 0, 1), 600.0)], {pool: 16}, 1.0, 1500)
    sim = Simulation(catalog, a_contract(), "contract")
    sim.add_jobs([TraceJob(f"t{i}", i * 10.0, 8, 3000.0, "training") for i in range(3)])
    sim.add_capacity(changes)
    sim.run()
    s = summarise(sim, {"H100"})
    # oci drops to 0 at 600 s (t1 and t2 evicted, queued: azure is full) and returns at 1,200 s;
    # each is offered to azure again (declined in 1 s) and restarts on oci at 1,201 s
    assert s["preemptions"] == {"capacity-lost": 2}
    assert sorted(sim.rec.waits_after_eviction["training"]) == [601.0, 601.0]  # + azure's 1 s answer
    assert s["contractViolations"] == {}
    assert s["gpuHours"]["unserved"]["training"] == pytest.approx(0.0)


def test_scale_capacity_per_cloud_and_per_pool() -> None:
    catalog = load_catalog(default_catalog())
    scaled, rules = scale_catalog(catalog, parse_scale("azure=0.5,azure/eastus/H100=0,oci/*/H100=2", catalog))
    azure = {r.name: r.gpus for r in scaled.spec.backends[0].regions}
    assert azure["eastus"] == {"H100": 0, "H200": 128, "GB200": 144}  # the pool setting beats the cloud's
    assert azure["westus3"] == {"H100": 128, "H200": 64}
    oci = {r.name: r.gpus for r in scaled.spec.backends[1].regions}
    assert oci["us-ashburn-1"] == {"H100": 3072, "H200": 512, "MI300X": 256}
    assert "azure H100 1,248 -> 368 GPUs" in rules[0].effect
    for bad in ("nimbus=0.5", "azure=-1", "azure/nowhere=0.5", "azure"):
        with pytest.raises(TraceError, match="--scale-capacity"):
            parse_scale(bad, catalog)


def test_spot_reader_rejects_a_file_not_a_directory(tmp_path: Path) -> None:
    from scheduler.sim.traces import read_spot_dir

    (tmp_path / "f.json").write_text("{}")
    with pytest.raises(TraceError, match="not a directory"):
        read_spot_dir(tmp_path / "f.json")
