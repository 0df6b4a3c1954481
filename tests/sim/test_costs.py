"""The cost model (``--costs``): committed GPUs paid used or not, on demand above them, spot, start-up billing; by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.errors import TraceError
from scheduler.paths import examples_dir
from scheduler.sim.costs import CostModel, committed_gpus, load_costs
from scheduler.sim.simulator import Simulation
from scheduler.sim.summary import summarise
from scheduler.specs import CloudCatalog
from tests.builders import a_contract
from tests.sim.test_simulator import job, world


def with_spot(catalog: CloudCatalog, cloud: str, spot: dict[str, float]) -> CloudCatalog:
    """``catalog`` with ``cloud``'s ``spotPrices`` set (validated as a catalog file would be)."""
    raw = catalog.model_dump(mode="json", by_alias=True)
    for b in raw["spec"]["backends"]:
        if b["name"] == cloud:
            b["spotPrices"] = spot
    return CloudCatalog.model_validate(raw)


def run(costs: CostModel | None, jobs: list, horizon: float = 4000, catalog: CloudCatalog | None = None) -> dict:  # type: ignore[type-arg]
    sim = Simulation(catalog or world(azure=16), a_contract(), "contract", committed=committed_gpus(costs))
    sim.add_jobs(jobs)
    sim.run(horizon=horizon)
    return summarise(sim, {"H100"}, costs=costs)


def test_committed_gpus_are_paid_used_or_not_and_usage_above_them_on_demand() -> None:
    # azure 16 GPUs at list $3.6; 4 committed at $2/GPU-h over a 4,000 s horizon.
    # a: 8 GPUs placed at 0 until 1,122 (work 122..1,122). Held above the commitment: 4 x 1,122 GPU-s.
    costs = CostModel.model_validate({"clouds": {"azure": {"committed": {"H100": {"gpus": 4, "usdPerGpuHour": 2.0}}}}})
    s = run(costs, [job("a", 0, 8, 1000)])
    azure = s["costs"]["perCloud"]["azure"]
    assert azure["committedUsd"] == pytest.approx(4 * 2.0 * 4000 / 3600)
    assert azure["idleCommittedUsd"] == pytest.approx(4 * (4000 - 1122) / 3600 * 2.0)  # used 0..1,122 only
    assert azure["onDemandUsd"] == pytest.approx(4 * 1122 / 3600 * 3.6)
    assert s["costUsdTotal"] == pytest.approx(azure["committedUsd"] + azure["onDemandUsd"])
    assert s["costUsdPerCloud"] == {"azure": pytest.approx(azure["totalUsd"])}
    # no cost file: every GPU held at list price, as the engine books it
    plain = run(None, [job("a", 0, 8, 1000)])
    assert plain["costUsdTotal"] == pytest.approx(8 * 1122 / 3600 * 3.6) == pytest.approx(plain["costUsdHeldAtListPrices"])
    assert plain["costs"]["from"] == "the catalog's on-demand prices (no --costs)"


def test_spot_share_and_start_up_billing() -> None:
    # azure: usage 8 x 1,122 GPU-s, of which 8 x 120 start-up; start-up not billed; half of it as spot at the catalog's $1.
    costs = CostModel.model_validate({"clouds": {"azure": {"spotShare": 0.5, "billStartup": False}}})
    azure = run(costs, [job("a", 0, 8, 1000)], catalog=with_spot(world(azure=16), "azure", {"H100": 1.0}))["costs"]["perCloud"]["azure"]
    billed = 8 * (1122 - 120)
    assert azure["onDemandUsd"] == pytest.approx(billed * 0.5 * 3.6 / 3600)
    assert azure["spotUsd"] == pytest.approx(billed * 0.5 * 1.0 / 3600)
    assert azure["startupUsd"] == 0.0


def test_the_holder_only_baseline_still_pays_other_clouds_commitments() -> None:
    costs = CostModel.model_validate({"clouds": {"oci": {"committed": {"H100": {"gpus": 10, "usdPerGpuHour": 1.5}}}}})
    sim = Simulation(world(), a_contract(), "azure-only", committed=committed_gpus(costs))
    sim.add_jobs([job("a", 0, 8, 1000)])
    sim.run(horizon=3600)
    oci = summarise(sim, {"H100"}, costs=costs)["costs"]["perCloud"]["oci"]
    assert oci["committedUsd"] == oci["idleCommittedUsd"] == pytest.approx(15.0)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("clouds: {nimbus: {}}", "clouds.nimbus: not in the catalog"),
        ("clouds: {azure: {committed: {H200: {gpus: 1, usdPerGpuHour: 2}}}}", "clouds.azure.committed.H200: azure has no H200 pools"),
        ("clouds: {azure: {committed: {H100: {gpus: 99, usdPerGpuHour: 2}}}}", "clouds.azure.committed.H100.gpus: 99 committed but the catalog has 8 H100 on azure"),
        ("clouds: {azure: {committed: {H100: {gpus: 1, usdPerGpuHour: -2}}}}", "clouds.azure.committed.H100.usdPerGpuHour: Input should be greater than or equal to 0"),
        ("clouds: {azure: {spotShare: 0.5}}", "clouds.azure.spotShare: 0.5 of the usage as spot needs spot prices: the catalog (t) has none in spec.backends[0].spotPrices (azure)"),
        ("clouds: {oci: {spotUsdPerGpuHour: {H100: 1.4}, spotShare: 0.5}}",
         "clouds.oci.spotUsdPerGpuHour: spot prices are the catalog's now: set spec.backends[1].spotPrices (oci)"),
        ("clouds: {azure: {comitted: {}}}", "clouds.azure.comitted: Extra inputs are not permitted"),
        ("clouds: [", "line 2: invalid YAML: did not find expected node content"),
        ("clouds:\n  azure:\n    committed: {H100: {gpus: 4, usdPerGpuHour: 2}}\n  azure:\n    billStartup: false\n",
         "line 4: invalid YAML: duplicate key 'azure'"),  # the last would win: the commitment gone without a word
        ("clouds: {}\n---\nclouds: {}\n", "line 3: one cost model per file (a second YAML document starts here)"),
        ("clouds: &a {}\nother: *a\n", "line 1: YAML aliases/anchors are not allowed in specs"),  # refused as in spec files
    ],
)
def test_a_bad_cost_file_is_one_line(tmp_path: Path, text: str, expect: str) -> None:
    p = tmp_path / "costs.yaml"
    p.write_text(text)
    with pytest.raises(TraceError) as exc:
        load_costs(p, world())
    assert expect in str(exc.value) and str(exc.value).startswith(f"--costs: {p}: ") and "\n" not in str(exc.value)


def test_the_shipped_cost_model_loads_against_the_tight_catalog() -> None:
    from scheduler.loading import load_catalog

    model = load_costs(examples_dir() / "sim" / "costs.yaml", load_catalog(examples_dir() / "sim" / "catalog-azure-tight.yaml"))
    assert committed_gpus(model) == {("azure", "H100"): 32}


def test_the_cost_of_honouring_the_contract_against_each_baseline() -> None:
    from scheduler.sim.report import honouring

    def s(cost: float, unserved: float, not_started: int) -> dict:  # type: ignore[type-arg]
        return {"costUsdTotal": cost, "costUsdWithUnserved": cost + unserved, "neverStarted": {"training": not_started} if not_started else {}}

    lines = honouring({"contract": s(120.0, 0.0, 0), "cheapest": s(100.0, 0.0, 0), "azure-only": s(90.0, 60.0, 3)})
    assert lines == {
        "cheapest": "the contract costs $20 more (+20.0%); $20 more counting unserved work at its value (jobs not started: contract 0, cheapest 0)",
        "azure-only": "the contract costs $30 more (+33.3%); $30 less counting unserved work at its value (jobs not started: contract 0, azure-only 3)",
    }


def test_the_spot_rate_is_the_catalogs_and_a_bad_spot_price_names_the_catalog_file_and_field(tmp_path: Path) -> None:
    from scheduler.errors import MCSchedError
    from scheduler.loading import load_catalog

    tight = load_catalog(examples_dir() / "sim" / "catalog-azure-tight.yaml")
    model = load_costs(examples_dir() / "sim" / "costs.yaml", tight)
    assert "spotUsdPerGpuHour" not in CostModel.model_fields["clouds"].annotation.__args__[1].model_fields  # type: ignore[union-attr]
    oci = tight.backend("oci")
    assert oci is not None and oci.spotPrices == {"H100": 1.40} and model.clouds["oci"].spotShare == 0.25
    bad = tmp_path / "catalog.yaml"
    bad.write_text((examples_dir() / "sim" / "catalog-azure-tight.yaml").read_text().replace("spotPrices: {H100: 1.40}", "spotPrices: {H200: 1.40}"))
    with pytest.raises(MCSchedError) as exc:
        load_catalog(bad)
    text = str(exc.value)
    assert str(bad) in text and "spotPrices" in text and "'H200' has a spot price but no on-demand price" in text and "\n" not in text.strip(), text
