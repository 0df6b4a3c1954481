"""Simulation outputs a planner reads: PNG plots and report.md (one policy, or several side by side).

Conventions every plot keeps: one colour per cloud (and per class, per policy) everywhere;
utilisation and shares in percent; cost as a rate accrued while GPUs are held; time in the
unit the run's span reads best in; titles name trace, policy and load; scenario events
drawn as labelled vertical lines; an empty chart says "nothing queued" rather than nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.sim.policies import DESCRIPTIONS
from scheduler.sim.simulator import Sample
from scheduler.sim.summary import fmt_seconds, fmt_span, fmt_wait, headline, span_unit
from scheduler.specs import JOB_CLASSES

KNOWN_CLOUD_COLOURS = {
    "azure": "#1f77b4",
    "oci": "#d62728",
    "aws": "#ff7f0e",
    "gcp": "#2ca02c",
    "coreweave": "#9467bd",
    "stargate": "#8c564b",
}
SPARE_COLOURS = ("#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39")
CLASS_COLOURS = {"api-serving": "#1f77b4", "inference": "#2ca02c", "training": "#ff7f0e"}
REASON_COLOURS = {
    "declined: no-capacity": "#9ecae1",
    "declined: reserved-for-api-serving": "#3182bd",
    "declined: reserved-for-queued-job": "#6baed6",
    "declined: gpu-type-not-offered": "#c6dbef",
    "declined: gang-too-large": "#08519c",
    "declined: below-price-floor": "#74c476",
    "declined: cannot-match-start": "#31a354",
    "lapsed: backend-down": "#de2d26",
    "lapsed: no-answer-within-window": "#fc9272",
}
POLICY_COLOURS = {"contract": "#1f77b4", "cheapest": "#ff7f0e", "azure-only": "#7f7f7f"}


def cloud_colours(clouds: Sequence[str]) -> dict[str, str]:
    """Stable: a known cloud always has its colour; others take spares in catalog order."""
    out: dict[str, str] = {}
    spare = iter(SPARE_COLOURS * 4)
    for c in clouds:
        out[c] = KNOWN_CLOUD_COLOURS.get(c) or next(spare)
    return out


@dataclass
class RunView:
    """What the plots of one policy need; ``title`` names trace, policy, load (and scenario)."""

    title: str
    samples: list[Sample]
    clouds: list[str]
    holder: str
    gpu_types: set[str]
    markers: list[tuple[float, str]] = field(default_factory=list)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["figure.constrained_layout.use"] = True
    return plt


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, for the sweep's plots too."""
    return _plt()


def _begin(view: RunView) -> tuple[Any, list[float], str]:
    """pyplot, the x values in the unit the run's span reads best in, and that axis label."""
    end = view.samples[-1].t if view.samples else 0.0
    size, unit = span_unit(end)
    return _plt(), [s.t / size for s in view.samples], f"simulated {unit}"


def _markers(ax: Any, view: RunView) -> None:
    """Scenario events as numbered dotted lines (the numbers are explained under the figure)."""
    if not view.markers:
        return
    size, _ = span_unit(view.samples[-1].t if view.samples else 0.0)
    for k, (t, _label) in enumerate(view.markers, 1):
        ax.axvline(t / size, color="#444444", linestyle=":", linewidth=1)
        ax.annotate(str(k), (t / size, 1.0), xycoords=("data", "axes fraction"), fontsize=7, va="bottom", ha="center", color="#444444")


def _marker_caption(fig: Any, view: RunView) -> None:
    if not view.markers:
        return
    size, unit = span_unit(view.samples[-1].t if view.samples else 0.0)
    text = "scenario: " + "   ".join(f"{k} {label} ({t / size:,.2f} {unit[:1] if unit != 'minutes' else 'min'})" for k, (t, label) in enumerate(view.markers, 1))
    fig.supxlabel(text, fontsize=7, color="#444444")


def _save(fig: Any, out: Path, name: str, view: RunView | None = None) -> str:
    if view is not None:
        _marker_caption(fig, view)
    fig.savefig(out / name)
    _plt().close(fig)
    return name


def _frame(ax: Any, view: RunView, title: str, ylabel: str, xlabel: str | None = None) -> None:
    """What every time panel has: title, labels, grid, scenario markers."""
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    _markers(ax, view)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="#555555")


def plot_utilisation(view: RunView, out: Path) -> str:
    """Per GPU type the trace asks for: GPUs held vs capacity (dashed) per cloud, then utilisation %.

    Each point is the peak since the previous sample (exact, not an instant's reading), so a
    saturation shorter than the sampling step still reaches its height.
    """
    plt, xs, xlabel = _begin(view)
    types = sorted(view.gpu_types)
    colours = cloud_colours(view.clouds)
    step = _step(view)
    fig, axes = plt.subplots(2, len(types), figsize=(10 * max(1, len(types)) ** 0.5 + 1, 7), dpi=100, squeeze=False, sharex=True)
    for j, gpu_type in enumerate(types):
        top, bottom = axes[0][j], axes[1][j]
        for cloud in view.clouds:
            key = (cloud, gpu_type)
            cap = [s.cap.get(key, 0) for s in view.samples]
            if not any(cap):
                continue
            held = [s.peak_alloc.get(key, s.alloc.get(key, 0)) for s in view.samples]
            share = [100 * min(s.peak_share.get(key, 0.0), 1.0) for s in view.samples]
            top.plot(xs, held, color=colours[cloud], linewidth=1.4, label=cloud)
            top.plot(xs, cap, color=colours[cloud], linewidth=1, linestyle="--", alpha=0.7)
            bottom.plot(xs, share, color=colours[cloud], linewidth=1.4, label=cloud)
        _frame(top, view, f"{gpu_type} GPUs held (solid; peak within each ~{step} step) and capacity (dashed)", "GPUs")
        _frame(bottom, view, f"{gpu_type} utilisation per cloud (peak within each ~{step} step)", "% of capacity held", xlabel)
        bottom.set_ylim(0, 105)
        top.legend(loc="upper left", fontsize=7, ncol=3)
    fig.suptitle(view.title)
    return _save(fig, out, "utilisation.png", view)


def _queued(s: Sample, cls: str) -> int:
    """The most GPUs of ``cls`` queued at any moment since the previous sample (a short queue is never sampled away)."""
    return s.peak_queued_gpus.get(cls, s.queued_gpus.get(cls, 0))


def _step(view: RunView) -> str:
    return fmt_seconds(view.samples[-1].t / max(len(view.samples) - 1, 1)) if view.samples else "0 s"


def plot_queue(view: RunView, out: Path) -> str:
    plt, xs, xlabel = _begin(view)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    drawn = False
    for cls in JOB_CLASSES:
        ys = [_queued(s, cls) for s in view.samples]
        if any(ys):
            ax.plot(xs, ys, color=CLASS_COLOURS[cls], linewidth=1.4, label=cls)
            drawn = True
    if drawn:
        ax.legend(loc="upper left", fontsize=8)
    else:
        _empty(ax, "nothing queued: every job was placed on arrival")
    _frame(ax, view, f"Queued GPUs by class (peak within each ~{_step(view)} step)\n{view.title}", "GPUs waiting", xlabel)
    return _save(fig, out, "queue.png", view)


def plot_classes(view: RunView, out: Path) -> str:
    """One panel per class: GPUs held by cloud (stacked) and GPUs queued (black)."""
    plt, xs, xlabel = _begin(view)
    colours = cloud_colours(view.clouds)
    classes = [c for c in JOB_CLASSES if any(_queued(s, c) or any(k[0] == c for k in s.running_gpus) for s in view.samples)]
    classes = classes or list(JOB_CLASSES)
    fig, axes = plt.subplots(len(classes), 1, figsize=(10, 2.8 * len(classes) + 0.6), dpi=100, sharex=True, squeeze=False)
    for ax, cls in zip((a[0] for a in axes), classes, strict=True):
        clouds = [c for c in view.clouds if any(s.running_gpus.get((cls, c), 0) for s in view.samples)]
        if clouds:
            ax.stackplot(xs, *[[s.running_gpus.get((cls, c), 0) for s in view.samples] for c in clouds],
                         colors=[colours[c] for c in clouds], labels=clouds, alpha=0.85)
        queued = [_queued(s, cls) for s in view.samples]
        if any(queued):
            ax.plot(xs, queued, color="black", linewidth=1.2, linestyle="--", label="queued (peak per step)")
        if not clouds and not any(queued):
            _empty(ax, f"no {cls} work")
        _frame(ax, view, f"{cls}: GPUs held by cloud, and queued", "GPUs")
        if clouds or any(queued):
            ax.legend(loc="upper left", fontsize=7, ncol=4)
    axes[-1][0].set_xlabel(xlabel)
    fig.suptitle(view.title)
    return _save(fig, out, "classes.png", view)


def plot_cost(view: RunView, out: Path) -> str:
    """Cost as a rate accrued while GPUs are held (stacked by cloud), cumulative on the right.

    Both come from the exact spend accrued up to each sample: the rate is its average over
    each step, and the cumulative line ends at the run's total cost.
    """
    plt, xs, xlabel = _begin(view)
    colours = cloud_colours(view.clouds)
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    clouds = [c for c in view.clouds if any(s.spent.get(c, 0.0) > 1e-9 for s in view.samples)]
    if clouds:
        rates: list[list[float]] = []
        for c in clouds:
            ys = [0.0]
            for a, b in zip(view.samples, view.samples[1:], strict=False):
                dt = b.t - a.t
                ys.append(max(b.spent.get(c, 0.0) - a.spent.get(c, 0.0), 0.0) * 3600 / dt if dt > 0 else ys[-1])
            rates.append(ys)
        ax.stackplot(xs, *rates, colors=[colours[c] for c in clouds], labels=clouds, alpha=0.85, step="pre")
        ax.legend(loc="upper left", fontsize=8)
        twin = ax.twinx()
        twin.plot(xs, [sum(s.spent.values()) for s in view.samples], color="black", linewidth=1, label="cumulative USD (right)")
        twin.set_ylabel("cumulative USD")
        twin.legend(loc="lower right", fontsize=8)  # the line ends top right
    else:
        _empty(ax, "no GPUs held: nothing spent")
    _frame(ax, view, f"Spend rate by cloud at list prices (accrued while GPUs are held, commitments aside; average over each ~{_step(view)} step)\n{view.title}",
           "USD per hour", xlabel)
    return _save(fig, out, "cost.png", view)


def plot_rofr(view: RunView, out: Path) -> str:
    """The holder's share of GPUs held over time, and its declines and lapses by reason."""
    plt, xs, xlabel = _begin(view)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), dpi=100, sharex=True)
    share = []
    for s in view.samples:
        total = sum(s.alloc.values())
        share.append(100 * sum(v for (c, _t), v in s.alloc.items() if c == view.holder) / total if total else float("nan"))
    top.plot(xs, share, color=cloud_colours(view.clouds).get(view.holder, "#1f77b4"), linewidth=1.4)
    top.set_ylim(0, 105)
    _frame(top, view, f"Holder ({view.holder}) share of all GPUs held (gaps: nothing held)", f"% of GPUs held on {view.holder}")
    reasons = sorted({k for s in view.samples for k in s.answers})
    if reasons:
        series = []
        for r in reasons:
            ys = [0.0]
            for k in range(1, len(view.samples)):
                dt = view.samples[k].t - view.samples[k - 1].t
                dn = view.samples[k].answers.get(r, 0) - view.samples[k - 1].answers.get(r, 0)
                ys.append(3600 * dn / dt if dt > 0 else 0.0)
            series.append(ys)
        names = [f"{a}: {r}" for a, r in reasons]
        bottom.stackplot(xs, *series, labels=names, colors=[REASON_COLOURS.get(n, "#bdbdbd") for n in names], alpha=0.9)
        bottom.legend(loc="upper left", fontsize=7)
    else:
        _empty(bottom, f"{view.holder} never declined nor lapsed")
    _frame(bottom, view, "Holder declines and lapses by reason", "answers per hour", xlabel)
    fig.suptitle(view.title)
    return _save(fig, out, "rofr.png", view)


def plots(view: RunView, out: Path) -> list[str]:
    return [plot_utilisation(view, out), plot_queue(view, out), plot_classes(view, out), plot_cost(view, out), plot_rofr(view, out)]


def plot_comparison(summaries: dict[str, dict[str, Any]], title: str, out: Path) -> str:
    """Side by side: cost, cost per served GPU-hour, unserved GPU-hours, holder share, p95 waits, never placed."""
    plt = _plt()
    names = list(summaries)
    colours = [POLICY_COLOURS.get(n, "#7f7f7f") for n in names]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), dpi=100)
    flat = [a for row in axes for a in row]

    def bars(ax: Any, values: list[float], label: str, fmt: str) -> None:
        rects = ax.bar(names, values, color=colours)
        ax.bar_label(rects, labels=[fmt.format(v) for v in values], fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, axis="y")

    bars(flat[0], [s["costUsdWithUnserved"] for s in summaries.values()], "Cost + unserved work valued (USD)", "${:,.0f}")
    bars(flat[1], [s["costUsdPerServedGpuHour"] for s in summaries.values()], "Cost per served GPU-hour (USD)", "${:,.2f}")
    bars(flat[2], [100 * s["holderShareOfGpuHours"] for s in summaries.values()], "Holder share of GPU-hours held (%)", "{:.1f}%")

    def grouped(ax: Any, key: Any, label: str, fmt: str, nothing: str) -> None:
        width = 0.8 / len(names)
        values = [[key(s, c) for c in JOB_CLASSES] for s in summaries.values()]
        if not any(v for vals in values for v in vals):
            _empty(ax, nothing)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            for k, (n, vals) in enumerate(zip(names, values, strict=True)):
                rects = ax.bar([i + k * width for i in range(len(JOB_CLASSES))], vals, width, color=colours[k], label=n)
                ax.bar_label(rects, labels=[fmt.format(v) if v else "" for v in vals], fontsize=7)
            ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(JOB_CLASSES))], JOB_CLASSES)
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize=7)
        ax.set_title(label, fontsize=10)

    grouped(flat[3], lambda s, c: s["gpuHours"]["unserved"].get(c, 0.0), "Unserved GPU-hours by class", "{:,.0f}", "no unserved work under any policy")
    longest = max((w["first"].get("p95", 0.0) for s in summaries.values() for w in s["waitSeconds"].values()), default=0.0)
    size, unit = (86400.0, "days") if longest >= 2 * 86400 else (3600.0, "hours") if longest >= 2 * 3600 else (60.0, "minutes")
    grouped(flat[4], lambda s, c: s["waitSeconds"].get(c, {}).get("first", {}).get("p95", 0.0) / size, f"p95 first wait by class ({unit}; censored as lower bounds)", "{:,.1f}", "no waits")
    grouped(flat[5], lambda s, c: float(s["neverStarted"].get(c, 0)), "Jobs not started by the horizon, by class", "{:,.0f}", "every job started under every policy")
    fig.suptitle(f"Policy comparison: {title}")
    return _save(fig, out, "comparison.png")


# ---------------------------------------------------------------------------------------- report.md


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _served_rows(s: dict[str, Any]) -> list[list[str]]:
    gh = s["gpuHours"]
    rows = []
    for cls in JOB_CLASSES:
        if cls not in gh["requested"]:
            continue
        req, srv, uns = gh["requested"][cls], gh["served"][cls], gh["unserved"][cls]
        rows.append([cls, f"{req:,.0f}", f"{srv:,.0f}", f"{gh.get('inProgressAtHorizon', {}).get(cls, 0.0):,.0f}",
                     f"{uns:,.0f} ({uns / req if req else 0:.1%})", f"{s['neverStarted'].get(cls, 0):,}",
                     f"{s['unplaceable'].get(cls, 0):,}"])
    return rows


def _wait_rows(s: dict[str, Any], which: str) -> list[list[str]]:
    rows = []
    for cls, figures in s["waitSeconds"].items():
        w = figures[which]
        if not w["count"]:
            continue
        rows.append([cls, f"{w['started']:,}", f"{w['censored']:,}", *(fmt_wait(w, q) for q in ("p50", "p95", "p99", "max"))])
    return rows


def _util_rows(s: dict[str, Any]) -> list[list[str]]:
    return [
        [cloud, gpu_type, f"{u['horizon']:.1%}", f"{u['steady']:.1%}", f"{u['peak']:.1%}", fmt_seconds(u["hoursNearFull"] * 3600), f"{u['gpuHoursHeld']:,.0f}"]
        for cloud, types in s["utilisation"].items()
        for gpu_type, u in types.items()
    ]


def _cost_table(s: dict[str, Any]) -> list[str]:
    """The bill by cloud: committed (and how much of it idle), on demand, spot, start-up (part of the usage billed)."""
    c = s["costs"]
    rows = [[cloud, f"{v['committedGpus']:,.0f}", f"${v['committedUsd']:,.0f}", f"${v['idleCommittedUsd']:,.0f}", f"${v['onDemandUsd']:,.0f}",
             f"${v['spotUsd']:,.0f}", f"${v['startupUsd']:,.0f}", f"${v['totalUsd']:,.0f}"] for cloud, v in c["perCloud"].items()]
    rows.append(["**total**", "", f"${c['committedUsd']:,.0f}", f"${c['idleCommittedUsd']:,.0f}", f"${c['onDemandUsd']:,.0f}",
                 f"${c['spotUsd']:,.0f}", f"${c['startupUsd']:,.0f}", f"**${c['totalUsd']:,.0f}**"])
    head = ["cloud", "committed GPUs", "committed (paid, used or not)", "of which idle", "on demand", "spot", "start-up billed (in the usage)", "total"]
    return [f"### The bill over the horizon ({c['from']})", "", *_table(head, rows), ""]


WAIT_HEAD = ["class", "started", "not started by the horizon (censored)", "p50", "p95", "p99", "max"]


def policy_section(s: dict[str, Any], images: list[str], prefix: str = "") -> list[str]:
    """The tables of one policy (used alone, or under its heading in a comparison)."""
    h = s["horizon"]
    lines = [f"Policy **{s['policy']}**: {DESCRIPTIONS.get(s['policy'], s['policy'])}.", "", f"### Served and unserved work by the horizon ({h['label']})", ""]
    lines += _table(["class", "requested GPU-h", "served GPU-h", "in progress at the horizon", "unserved GPU-h", "jobs not started (unserved)",
                     "of which refused at admission"], _served_rows(s))
    rates = ", ".join(f"{t} ${r:,.2f}" for t, r in sorted(s["unservedUsdPerGpuHour"].items()))
    lines += [
        "",
        f"Cost **${s['costUsdTotal']:,.0f}**, **${s['costUsdPerServedGpuHour']:,.2f} per served GPU-hour**; per cloud: "
        + (", ".join(f"{c} ${v:,.0f}" for c, v in s["costUsdPerCloud"].items()) or "nothing")
        + f". Unserved work valued at **${s['unservedValueUsd']:,.0f}** ({rates} per GPU-hour: {s['unservedRateFrom']}); "
        f"cost + unserved value **${s['costUsdWithUnserved']:,.0f}**. Holder share of GPU-hours held: **{s['holderShareOfGpuHours']:.1%}**. "
        "Placements per cloud: " + (", ".join(f"{c} {n:,}" for c, n in s["jobsPerCloud"].items()) or "none") + ".",
        "",
    ]
    lines += _cost_table(s)
    refused = s["refusedAtAdmission"]
    if refused["count"]:
        lines += [f"**{refused['count']:,} jobs refused at admission** (the engine says no allowed pool can ever host them; unserved). First: "
                  + "; ".join(f"`{x}`" for x in refused["first"]), ""]
    if h["arrivalsAfter"]:
        lines += [f"{h['arrivalsAfter']:,} arrivals after the horizon were not replayed.", ""]
    lines += ["### First waits (submission to start of work; answer latency and start-up included)", ""]
    first = _wait_rows(s, "first")
    lines += _table(WAIT_HEAD, first) if first else ["(no job waited)"]
    lines += ["", "### Waits after an eviction (eviction to restart)", ""]
    again = _wait_rows(s, "afterEviction")
    lines += _table(WAIT_HEAD, again) if again else ["(no eviction)"]
    lines += ["", "A `≥` marks a figure that censored waits (jobs not started by the horizon, counted at horizon - since) make a lower bound.", ""]
    sw = s["steadyWindow"]
    lines += [f"### Utilisation over the horizon ({h['label']}) and the steady window (first to last arrival, {sw['label']}: no drain tail), "
              "GPU types the trace asks for", ""]
    lines += _table(["cloud", "GPU type", "over the horizon", "steady window", "peak", "time >= 95% held", "GPU-h held"], _util_rows(s)) if s["utilisation"] else ["(nothing ran)"]
    reasons = s["rofr"]["declineAndLapseReasons"]
    violations = s["contractViolations"]
    notes = s.get("checkerNotes") or {}
    lines += [
        "",
        "### The contract at work",
        "",
        f"- Spill ranking after a decline or lapse: {s['spillRanking']}",
        "- Holder declines and lapses: " + (", ".join(f"{k} {v:,}" for k, v in reasons.items()) or "none"),
        "- Preemptions: " + (", ".join(f"{k} {v:,}" for k, v in s["preemptions"].items()) or "none"),
        "- Contract violations (the checker's contract rules: ROFR, pins, preemption): "
        + ("not checked" if violations is None else (", ".join(f"{k} {v:,}" for k, v in violations.items()) or "none")),
        *([f"- Checker bookkeeping notes (not contract violations): {', '.join(f'{k} {v:,}' for k, v in notes.items())}"] if notes else []),
        "- Class priorities: " + ", ".join(f"{c} {p}" for c, p in s["classPriorities"].items()) + f" ({s['classPrioritiesFrom']})",
        "",
    ]
    for img in images:
        lines += [f"![{img}]({prefix}{img})", ""]
    return lines


def _inputs(inputs: dict[str, Any]) -> list[str]:
    lines = ["## Inputs and every mapping rule applied", ""]
    lines += _table(["rule", "effect"], [[r["rule"], r["effect"]] for r in inputs["rules"]])
    trace = inputs["trace"]
    skipped = trace.get("skipped") or {}
    if skipped:
        lines += ["", f"**{sum(skipped.values()):,} of {trace['rows']:,} trace rows skipped**: "
                  + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items(), key=lambda kv: -kv[1])) + ". First:", ""]
        lines += [f"- `{x}`" for x in trace.get("firstSkipped", [])]
    return [*lines, ""]


def write_report(out: Path, summary: dict[str, Any], images: list[str], title: str) -> list[str]:
    """report.md for one policy; returns its lines (the first is the headline)."""
    first = headline(summary, title)
    lines = [f"# {first}", "", f"{summary['jobs']:,} jobs over {summary['span']} simulated; {title}.", ""]
    for w in summary["warnings"]:
        lines += [f"> **Warning:** {w}", ""]
    lines += _definitions() + policy_section(summary, images) + _inputs(summary["inputs"]) + _footer([summary])
    (out / "report.md").write_text("\n".join(lines))
    return lines


def write_comparison(out: Path, summaries: dict[str, dict[str, Any]], images: dict[str, list[str]], chart: str, title: str) -> list[str]:
    """One report for several policies: headlines, a side-by-side table, the chart, then each policy."""
    heads = [headline(s) for s in summaries.values()]
    worst = [h for h in heads if h.startswith("API STRANDED")] or [h for h in heads if h.startswith("API DELAYED")]
    first = f"{worst[0]} ({title})" if worst else f"Policy comparison: {', '.join(summaries)} ({title})"
    lines = [f"# {first}", ""]
    lines += [f"- {h}" for h in heads] + [""]
    warnings = sorted({w for s in summaries.values() for w in s["warnings"]})
    for w in warnings:
        lines += [f"> **Warning:** {w}", ""]
    names = list(summaries)

    def row(label: str, f: Any) -> list[str]:
        return [label, *(f(summaries[n]) for n in names)]

    rows = [
        row("what it is", lambda s: DESCRIPTIONS.get(s["policy"], s["policy"])),
        row("cost (USD)", lambda s: f"${s['costUsdTotal']:,.0f}"),
        row("unserved work valued (USD)", lambda s: f"${s['unservedValueUsd']:,.0f}"),
        row("cost + unserved value (USD)", lambda s: f"${s['costUsdWithUnserved']:,.0f}"),
        row("of which committed / idle committed (USD)", lambda s: f"${s['costs']['committedUsd']:,.0f} / ${s['costs']['idleCommittedUsd']:,.0f}"),
        row("cost per served GPU-hour", lambda s: f"${s['costUsdPerServedGpuHour']:,.2f}"),
        row("holder share of GPU-hours held", lambda s: f"{s['holderShareOfGpuHours']:.1%}"),
        row("served GPU-hours", lambda s: f"{sum(s['gpuHours']['served'].values()):,.0f}"),
        row("unserved GPU-hours", lambda s: f"{sum(s['gpuHours']['unserved'].values()):,.0f}"),
        row("jobs not started by the horizon", lambda s: f"{sum(s['neverStarted'].values()):,}"),
    ]
    for cls in JOB_CLASSES:
        if any(cls in s["gpuHours"]["requested"] for s in summaries.values()):
            rows.append(row(f"{cls}: unserved GPU-h / jobs not started", lambda s, c=cls: f"{s['gpuHours']['unserved'].get(c, 0):,.0f} / {s['neverStarted'].get(c, 0):,}"))
            rows.append(row(f"{cls}: first wait p50 / p95 / p99", lambda s, c=cls: " / ".join(fmt_wait(s["waitSeconds"].get(c, {}).get("first", {}), q) for q in ("p50", "p95", "p99"))))
            rows.append(row(f"{cls}: wait after eviction p50 / p99", lambda s, c=cls: " / ".join(fmt_wait(s["waitSeconds"].get(c, {}).get("afterEviction", {}), q) for q in ("p50", "p99"))))
    rows += [
        row("preemptions", lambda s: f"{sum(s['preemptions'].values()):,}"),
        row("holder declines + lapses", lambda s: f"{sum(s['rofr']['declineAndLapseReasons'].values()):,}"),
        row("contract violations", lambda s: "not checked" if s["contractViolations"] is None else f"{sum(s['contractViolations'].values()):,}"),
        row("placements per cloud", lambda s: ", ".join(f"{c} {n:,}" for c, n in s["jobsPerCloud"].items()) or "none"),
    ]
    honour = honouring(summaries)
    if honour:
        lines += ["## The cost of honouring the contract", ""]
        lines += [f"- against **{b}**: {line}" for b, line in honour.items()] + [""]
    lines += ["## Side by side", ""] + _table(["", *names], rows) + [""] + ([f"![{chart}]({chart})", ""] if chart else [])
    lines += _definitions()
    for name, s in summaries.items():
        lines += [f"## Policy {name}", "", headline(s, title), "", *policy_section(s, images[name], prefix=f"{name}/")]
    first_inputs = next(iter(summaries.values()))["inputs"]
    lines += _inputs(first_inputs) + _footer(list(summaries.values()))
    (out / "report.md").write_text("\n".join(lines))
    return lines


def honouring(summaries: dict[str, dict[str, Any]]) -> dict[str, str]:
    """What the contract costs against each baseline run beside it: cost, and cost + unserved value."""
    c = summaries.get("contract")
    if c is None:
        return {}
    out = {}
    for name, b in summaries.items():
        if name == "contract":
            continue
        d, dv = c["costUsdTotal"] - b["costUsdTotal"], c["costUsdWithUnserved"] - b["costUsdWithUnserved"]
        out[name] = (f"the contract costs ${abs(d):,.0f} {'more' if d >= 0 else 'less'} "
                     f"({d / b['costUsdTotal'] if b['costUsdTotal'] else 0:+.1%}); ${abs(dv):,.0f} {'more' if dv >= 0 else 'less'} "
                     f"counting unserved work at its value (jobs not started: contract {sum(c['neverStarted'].values()):,}, "
                     f"{name} {sum(b['neverStarted'].values()):,})")
    return out


def _definitions() -> list[str]:
    return [
        "<details><summary>How these figures are computed</summary>",
        "",
        "- A placement at t starts work at t + the holder's answer latency (capped at the window) + the chosen cloud's startupSeconds; "
        "GPUs are held and paid for from t.",
        "- The run stops at the horizon; capacity traces and scenario events apply up to it. Jobs running then are credited and charged up to it.",
        "- Served GPU-hours are work done by the horizon; unserved = requested - served - work in progress at the horizon (refused at admission, "
        "not started by the horizon, or a serving replica that started late). Unserved work is valued at the stated rate.",
        "- Waits run from submission (first waits), or from an eviction (waits after eviction), to the start of work. A job not started by the "
        "horizon counts with its wait so far (a lower bound): percentiles it may move are printed `≥`.",
        "- Utilisation = GPUs held / capacity over the horizon, and over the steady window (first to last arrival), GPU types the trace asks for only; "
        "its peak is exact, and the time near full counts every second with >= 95% of the capacity held.",
        "- Contract violations count the checker's contract rules only (ROFR, pins, preemption); its bookkeeping notes are listed apart.",
        "",
        "</details>",
        "",
    ]


def _footer(summaries: list[dict[str, Any]]) -> list[str]:
    """Where the full figures are, and the ledger: written (its throwaway key named, how to verify) or off."""
    lines = ["The full figures are in [summary.json](summary.json).", ""]
    ledgers = [x["ledger"] for x in summaries if x.get("ledger")]
    if not ledgers:
        return [*lines, "No ledger was written (the default for a replay; `--ledger FILE` writes a signed one, `--ledger FILE.zst` a compact one).", ""]
    for led in ledgers:
        lines += [
            f"Every decision of {led['policy']} is in the signed ledger `{led['path']}`, signed with a throwaway Ed25519 key "
            f"(key id `{led['keyId']}`, made for this run, its private half discarded; public key `{led['publicKey']}`): "
            f"`mcsched audit verify --db {led['path']} --public-key {led['publicKey']}` "
            "re-checks it and the contract (the `cheapest` baseline fails the contract by design).",
            "",
        ]
    return lines


def render(
    out: Path, summaries: dict[str, dict[str, Any]], views: dict[str, RunView], title: str, *, draw: bool = True
) -> tuple[list[str], list[str], list[str]]:
    """Every output of a run from its summaries (and the plots' samples): summary.json, report.md, plots.

    One policy writes into ``out``; several write a comparison there and one sub-folder each.
    Returns the lines the command prints (headline first), the files written, and the lines
    about the ledger (where it is and how to verify it, or that none was written).
    """
    single = len(summaries) == 1
    images: dict[str, list[str]] = {}
    for policy, s in summaries.items():
        target = out if single else out / policy
        target.mkdir(parents=True, exist_ok=True)
        images[policy] = plots(views[policy], target) if draw else []
        if not single:
            (target / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
    if single:
        policy, s = next(iter(summaries.items()))
        (out / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
        write_report(out, s, images[policy], views[policy].title)
        files = ["summary.json", "report.md", *images[policy]]
        lines = [headline(s, views[policy].title), summary_line(s)]
    else:
        chart = plot_comparison(summaries, title, out) if draw else ""
        (out / "summary.json").write_text(json.dumps({"policies": summaries}, indent=2, sort_keys=True) + "\n")
        report = write_comparison(out, summaries, images, chart, title)
        files = ["summary.json", "report.md", *([chart] if chart else []), *(f"{n}/" for n in summaries)]
        lines = [report[0].removeprefix("# ")]
        lines += [f"{n}: {headline(s)}; {summary_line(s)}" for n, s in summaries.items()]
    ledgers = [s["ledger"] for s in summaries.values() if s.get("ledger")]
    notes = ["no ledger written (the default; --ledger FILE writes a signed one, FILE.zst a compact one)"]
    if ledgers:
        notes = [f"ledger {x['path']} (throwaway key {x['keyId']}; verify: mcsched audit verify --db {x['path']} "
                 f"--public-key {x['publicKey']})" for x in ledgers]
    return lines, files, notes


def summary_line(s: dict[str, Any]) -> str:
    """The second line of the command's output for one policy: work, cost, the contract."""
    served = sum(s["gpuHours"]["served"].values())
    unserved = sum(s["gpuHours"]["unserved"].values())
    violations = s["contractViolations"]
    return (
        f"{s['jobs']:,} jobs over {s['span']}: served {served:,.0f} GPU-h, unserved {unserved:,.0f} "
        f"({sum(s['neverStarted'].values()):,} jobs not started); cost ${s['costUsdTotal']:,.0f} "
        f"(${s['costUsdPerServedGpuHour']:,.2f}/served GPU-h; ${s['costUsdWithUnserved']:,.0f} with unserved work valued); "
        f"holder share {s['holderShareOfGpuHours']:.1%}; preemptions {sum(s['preemptions'].values()):,}; "
        f"violations {f'{sum(violations.values()):,}' if violations is not None else 'n/a'}"
    )


__all__ = ["RunView", "fmt_span", "plot_comparison", "plots", "render", "summary_line", "write_comparison", "write_report"]
