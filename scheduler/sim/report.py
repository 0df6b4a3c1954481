"""Simulation outputs: summary.json, PNG plots and a short report.md that links them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scheduler.sim.simulator import Sample


def plots(samples: list[Sample], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [s.t / 86400 for s in samples]
    made = []

    def series(key: str) -> dict[str, list[float]]:
        names = sorted({k for s in samples for k in getattr(s, key)})
        return {n: [float(getattr(s, key).get(n, 0)) for s in samples] for n in names}

    specs = [
        ("placements.png", "placements", "Placements per cloud (cumulative)", "placements"),
        ("queue.png", "queued", "Queue depth by class", "queued jobs"),
        ("utilisation.png", "utilisation", "GPU utilisation per cloud", "allocated / capacity"),
        ("cost.png", "cost", "Cost of finished work per cloud (cumulative)", "USD"),
    ]
    for fname, key, title, ylabel in specs:
        fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
        data = series(key)
        for name, ys in data.items():
            ax.plot(days, ys, label=name, linewidth=1.4)
        ax.set_title(title)
        ax.set_xlabel("simulated days")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if data:
            ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname)
        plt.close(fig)
        made.append(fname)
    return made


def write_report(out: Path, summary: dict[str, Any], images: list[str], trace: str, wall_seconds: float) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    lines = [
        f"# mcsched simulation: {trace}",
        "",
        f"Policy **{summary['policy']}**, {summary['jobs']:,} jobs over {summary['simulatedSeconds'] / 86400:.1f} simulated days "
        f"({wall_seconds:.1f} s wall time).",
        "",
        f"- Holder share of GPU-hours: **{summary['holderShareOfGpuHours']:.1%}**",
        f"- Total cost: **${summary['costUsdTotal']:,.0f}**",
        f"- Contract violations: **{sum(summary['contractViolations'].values())}** {summary['contractViolations'] or ''}",
        f"- Jobs per cloud: {summary['jobsPerCloud']}",
        f"- ROFR answers: {summary['rofr']['answers']}",
        f"- Still queued at the end: {summary['stillQueued'] or 0}",
        "",
        "| class | wait p50 (s) | p95 (s) | p99 (s) |",
        "| --- | --- | --- | --- |",
    ]
    for cls, w in summary["waitSeconds"].items():
        lines.append(f"| {cls} | {w['p50']:.0f} | {w['p95']:.0f} | {w['p99']:.0f} |")
    lines += ["", "The full figures are in [summary.json](summary.json); the ledger is `ledger.db` "
              "(`mcsched audit verify --db ledger.db`).", ""]
    for img in images:
        lines += [f"![{img}]({img})", ""]
    (out / "report.md").write_text("\n".join(lines))
