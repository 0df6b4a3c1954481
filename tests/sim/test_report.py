"""The plots a planner reads: percent, one colour per cloud, cost as a rate, titles naming the run, empty charts that say so."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.sim import report
from scheduler.sim.report import KNOWN_CLOUD_COLOURS, RunView, cloud_colours
from scheduler.sim.simulator import Simulation
from scheduler.sim.traces import TraceJob
from tests.builders import a_catalog, a_contract

TITLE = "t.csv · policy contract · load x2"


def simulated(jobs: list[TraceJob], oci_h100: int = 8) -> Simulation:
    catalog = (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 8}}, price=3.6, latency=2, startup=120)
        .cloud("oci", {"us-ashburn-1": {"H100": oci_h100}}, price=1.8, latency=3, startup=60)
        .obj()
    )
    sim = Simulation(catalog, a_contract(), "contract")
    sim.add_jobs(jobs)
    sim.run(samples=50)
    return sim


def view_of(jobs: list[TraceJob] | Simulation) -> RunView:
    sim = jobs if isinstance(jobs, Simulation) else simulated(jobs)
    return RunView(TITLE, sim.samples, ["azure", "oci"], "azure", {"H100"}, sim.markers)


@pytest.fixture()
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Keep each figure instead of saving it, to read what it shows."""
    kept: dict[str, Any] = {}

    def keep(fig: Any, out: Path, name: str, view: RunView | None = None) -> str:
        kept[name] = fig
        return name

    monkeypatch.setattr(report, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    plt.close("all")


def texts(fig: Any) -> str:
    parts = [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_ylabel(), *(t.get_text() for t in ax.texts)]
    return "\n".join(parts)


def test_every_plot_is_titled_with_the_run_and_reads_in_percent_and_rates(figures: dict[str, Any], tmp_path: Path) -> None:
    # two 8-GPU training jobs: one on azure, one spills to oci; nothing ever waits in the queue
    view = view_of([TraceJob("a", 0, 8, 3600, "training"), TraceJob("b", 10, 8, 3600, "training")])
    names = report.plots(view, tmp_path)
    assert names == ["utilisation.png", "queue.png", "classes.png", "cost.png", "rofr.png"]
    for name in names:
        assert TITLE in texts(figures[name]), name
    util = figures["utilisation.png"]
    assert "% of capacity held" in texts(util) and util.axes[1].get_ylim()[1] == 105
    assert "nothing queued" in texts(figures["queue.png"])  # not an empty frame
    assert "USD per hour" in texts(figures["cost.png"]) and "accrued while GPUs are held" in texts(figures["cost.png"])
    rofr = texts(figures["rofr.png"])
    assert "Holder (azure) share of all GPUs held" in rofr and "declines and lapses by reason" in rofr
    # azure held all 8 of its GPUs while a ran: 100% at some sample, never above
    pct = [y for line in util.axes[1].get_lines() if line.get_label() == "azure" for y in line.get_ydata()]
    assert max(pct) == 100.0


def test_a_cloud_keeps_its_colour_in_every_plot(figures: dict[str, Any], tmp_path: Path) -> None:
    view = view_of([TraceJob("a", 0, 8, 3600, "training"), TraceJob("b", 10, 8, 3600, "training")])
    report.plots(view, tmp_path)
    colour = {c: KNOWN_CLOUD_COLOURS[c] for c in ("azure", "oci")}
    util_lines = {line.get_label(): line.get_color() for line in figures["utilisation.png"].axes[0].get_lines() if not line.get_label().startswith("_")}
    assert util_lines == colour  # solid held lines; the dashed capacity lines share them
    for name in ("classes.png", "cost.png"):
        legend = figures[name].axes[0].get_legend()
        shown = {text.get_text(): handle.get_facecolor() for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)}
        from matplotlib.colors import to_rgba

        assert {k: v for k, v in shown.items() if k in colour} == {c: pytest.approx(to_rgba(colour[c], 0.85)) for c in colour}, name
    # stable whatever the catalog order; an unknown cloud takes a spare colour, not a known cloud's
    assert cloud_colours(["oci", "azure", "nimbus"])["azure"] == KNOWN_CLOUD_COLOURS["azure"]
    assert cloud_colours(["nimbus"])["nimbus"] not in KNOWN_CLOUD_COLOURS.values()


def test_queued_work_is_drawn_per_class(figures: dict[str, Any], tmp_path: Path) -> None:
    # three 8-GPU api-serving jobs pinned to azure's 8 GPUs: two wait in turn
    view = view_of([TraceJob(f"api{i}", i, 8, 3600, "api-serving") for i in range(3)])
    report.plots(view, tmp_path)
    queue = figures["queue.png"].axes[0]
    queued = {line.get_label(): max(line.get_ydata()) for line in queue.get_lines()}
    assert queued == {"api-serving": 16}  # two jobs x 8 GPUs at the peak
    assert "nothing queued" not in texts(figures["queue.png"])
    classes = texts(figures["classes.png"])
    assert "api-serving: GPUs held by cloud, and queued" in classes and "training" not in classes


def test_a_saturation_shorter_than_the_sampling_step_still_reaches_full_height(figures: dict[str, Any], tmp_path: Path) -> None:
    # azure 8 H100: a holds all 8 from 0 to 1,122 (100% for ~19 min); long holds 1 of 8 from
    # 2,000 for 100 days. 50 samples over ~100 days: one every ~2 days, so no instant sample
    # falls inside a's 1,122 s (at 0 nothing is placed yet; at ~2 days only long runs: 12.5%).
    view = view_of([TraceJob("a", 0, 8, 1000, "training"), TraceJob("long", 2000, 1, 100 * 86400, "training")])
    assert max(s.alloc.get(("azure", "H100"), 0) for s in view.samples) == 1  # what instant readings would plot
    report.plots(view, tmp_path)
    util = figures["utilisation.png"]
    held = max(y for line in util.axes[0].get_lines() if line.get_label() == "azure" for y in line.get_ydata())
    pct = max(y for line in util.axes[1].get_lines() if line.get_label() == "azure" for y in line.get_ydata())
    assert (held, pct) == (8, 100.0)
    assert "peak within each ~47.1 h step" in texts(util)  # 8,642,122 s over 51 intervals


def test_a_queue_shorter_than_the_sampling_step_is_drawn_not_called_nothing(figures: dict[str, Any], tmp_path: Path) -> None:
    # api1 takes azure's 8 GPUs at 0 (works 122..1,122); api2 (t=10, pinned to azure) queues with
    # 8 GPUs until api1 ends at 1,122. long (training, 1 GPU; azure is full at 20, so oci) runs
    # 100 days: samples every ~47 h, none inside 10..1,122, so instant readings show no queue.
    jobs = [TraceJob("api1", 0, 8, 1000, "api-serving"), TraceJob("api2", 10, 8, 1000, "api-serving"),
            TraceJob("long", 20, 1, 100 * 86400, "training")]
    view = view_of(jobs)
    assert not any(s.queued_gpus.get("api-serving") for s in view.samples)  # what instant readings would plot
    report.plots(view, tmp_path)
    queue = figures["queue.png"]
    assert "nothing queued" not in texts(queue)
    assert {line.get_label(): max(line.get_ydata()) for line in queue.axes[0].get_lines()} == {"api-serving": 8}
    api = next(ax for ax in figures["classes.png"].axes if ax.get_title().startswith("api-serving"))
    assert "queued (peak per step)" in [t.get_text() for t in api.get_legend().get_texts()]


def test_the_cost_plot_adds_up_to_the_runs_cost(figures: dict[str, Any], tmp_path: Path) -> None:
    # a: azure's 8 GPUs at $3.6 held 0..1,122 = 8 x 3.6 x 1,122 / 3,600 = $8.976; b: oci's 8 at $1.8
    # held 10..1,072 = $4.248; long: azure declines in 2 s, 1 oci GPU held from 20 to
    # 20 + 2 + 60 + 8,640,000 = 1.8 x 8,640,062 / 3,600 = $4,320.031. Samples every ~2 days.
    from scheduler.sim.summary import summarise

    jobs = [TraceJob("a", 0, 8, 1000, "training"), TraceJob("b", 10, 8, 1000, "training"), TraceJob("long", 20, 1, 100 * 86400, "training")]
    sim = simulated(jobs, oci_h100=9)
    total = summarise(sim, {"H100"})["costUsdTotal"]
    assert total == pytest.approx(8.976 + 4.248 + 4320.031)
    report.plots(view_of(sim), tmp_path)
    twin = figures["cost.png"].axes[1]
    cumulative = next(line for line in twin.get_lines() if line.get_label() == "cumulative USD (right)").get_ydata()
    assert cumulative[-1] == pytest.approx(total)
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(cumulative))  # spend only grows
    # the first sample after a and b ended (~47 h): both booked, and long's 1 GPU since 20 s
    first = next(s for s in sim.samples if s.t > 1122)
    assert sum(first.spent.values()) == pytest.approx(8.976 + 4.248 + 1.8 * (first.t - 20) / 3600)
    assert "average over each" in texts(figures["cost.png"])
