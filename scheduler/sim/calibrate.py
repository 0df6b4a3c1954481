"""``mcsched calibrate``: simulated against recorded waits on openb, the trace that records real starts.

openb records each pod's ``creation_time`` and ``scheduled_time``. Replaying it on a
one-cloud catalog that mirrors its cluster (every GPU of its node list in one pool, answers
and start-up instant, one class priority, no preemption) gives a simulated wait for every
pod. The comparison covers the pods that asked for whole GPUs (``gpu_milli`` 1000) and
started: quantiles of both, a Q-Q plot and one distance (the 1-Wasserstein distance between
the two distributions, in seconds, with the Kolmogorov-Smirnov statistic beside it).

There is no pass/fail threshold. Known reasons they differ, which the report repeats:
fractional GPUs are rounded up to whole GPUs (the replay holds more than the cluster
did); durations of pods still running at the trace's end are cut there; one pool has no
node fragmentation (a gang fits if enough GPUs are free anywhere); GPU models are merged
(``gpu_spec`` is empty for almost every pod); the real scheduler's queueing and its
priorities are not the engine's.
"""

from __future__ import annotations

import bisect
import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.errors import TraceError
from scheduler.events import Event, Placed
from scheduler.sim.simulator import Simulation
from scheduler.sim.summary import fmt_seconds, ranked
from scheduler.sim.traces import ANY_GPU, FALLBACK, ReadOptions, read_trace
from scheduler.specs import CloudCatalog, Contract

POOL = "GPU"
CLOUD = "openb"
QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)


def cluster_gpus(nodes: Path) -> tuple[int, dict[str, int]]:
    """Total GPUs of the node list, and per model."""
    per_model: dict[str, int] = defaultdict(int)
    try:
        with nodes.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"gpu", "model"} <= set(reader.fieldnames):
                raise TraceError(f"{nodes}: missing column(s) gpu, model (header has {', '.join(reader.fieldnames or []) or 'nothing'})")
            for line, row in enumerate(reader, 2):
                value, model = row["gpu"] or "", row["model"] or ""  # None: a short row's missing field
                try:
                    gpus = int(value)
                except ValueError:
                    raise TraceError(f"{nodes}:{line}: gpu: {f'not a whole number: {value!r}' if value else 'empty'}") from None
                if gpus < 0:
                    raise TraceError(f"{nodes}:{line}: gpu: {gpus}: a node has 0 GPUs or more")
                if gpus and not model:
                    raise TraceError(f"{nodes}:{line}: model: empty (a node with {gpus} GPUs)")
                per_model[model] += gpus
    except OSError as exc:
        raise TraceError(f"{nodes}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{nodes}: not UTF-8 text ({exc.reason})") from None
    total = sum(per_model.values())
    if total <= 0:
        raise TraceError(f"{nodes}: no GPUs in the node list")
    return total, dict(per_model)


def cluster_world(gpus: int) -> tuple[CloudCatalog, Contract]:
    """One cloud, one pool of ``gpus``, instant answers and start-up; a contract with it as holder, no preemption."""
    catalog = CloudCatalog.model_validate({
        "apiVersion": "mcsched.io/v1", "kind": "CloudCatalog", "metadata": {"name": "openb-cluster"},
        "spec": {"backends": [{"name": CLOUD, "latencySeconds": 0.0, "startupSeconds": 0.0, "prices": {POOL: 1.0},
                               "regions": [{"name": "cluster", "jurisdiction": "CN", "gpus": {POOL: gpus}}]}]},
    })
    contract = Contract.model_validate({
        "apiVersion": "mcsched.io/v1", "kind": "Contract", "metadata": {"name": "openb-cluster"},
        "spec": {"rofr": {"holder": CLOUD}, "preemption": {"enabled": False}},
    })
    return catalog, contract


def recorded_waits(pods: Path) -> dict[str, float]:
    """Pod -> scheduled_time - creation_time, for pods that asked for whole GPUs and started."""
    out: dict[str, float] = {}
    with pods.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                if int(row["num_gpu"]) >= 1 and float(row["gpu_milli"]) == 1000 and row["scheduled_time"]:
                    out[row["name"]] = float(row["scheduled_time"]) - float(row["creation_time"])
            except (KeyError, TypeError, ValueError):  # TypeError: a short row's missing field (None)
                continue  # the replay's reader has refused or counted such rows already
    return out


@dataclass
class Calibration:
    pods: int
    gpus: int
    per_model: dict[str, int]
    recorded: list[float]
    simulated: list[float]
    wasserstein: float
    ks: float
    peak_share: float  # the most of the pool the replay ever held

    def to_dict(self) -> dict[str, Any]:
        rec, sim = sorted(self.recorded), sorted(self.simulated)
        return {
            "pods": self.pods,
            "clusterGpus": self.gpus,
            "gpusPerModel": self.per_model,
            "quantiles": {f"p{round(q * 100)}": {"recorded": ranked(rec, q), "simulated": ranked(sim, q)} for q in QUANTILES},
            "mean": {"recorded": sum(rec) / len(rec), "simulated": sum(sim) / len(sim)},
            "wassersteinSeconds": self.wasserstein,
            "ksStatistic": self.ks,
            "peakShareOfPoolHeld": self.peak_share,
        }


def wasserstein(a: list[float], b: list[float]) -> float:
    """1-Wasserstein distance between two samples of the same size (mean |difference| of the sorted values)."""
    return sum(abs(x - y) for x, y in zip(sorted(a), sorted(b), strict=True)) / len(a)


def ks(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical distribution functions."""
    sa, sb = sorted(a), sorted(b)
    gap = 0.0
    for x in sa + sb:
        gap = max(gap, abs(bisect.bisect_right(sa, x) / len(sa) - bisect.bisect_right(sb, x) / len(sb)))
    return gap


def calibrate(pods: Path, nodes: Path, skip_bad_rows: bool = False) -> Calibration:
    """Replay openb on its cluster and pair every whole-GPU started pod's simulated and recorded wait."""
    gpus, per_model = cluster_gpus(nodes)
    catalog, contract = cluster_world(gpus)
    trace = read_trace(pods, "alibaba-openb", ReadOptions(gpu_map=f"{ANY_GPU}={POOL},{FALLBACK}={POOL}", skip_bad_rows=skip_bad_rows))
    first_start: dict[str, float] = {}

    def on_event(ev: Event) -> None:
        if isinstance(ev, Placed):
            first_start.setdefault(ev.job, ev.at)

    sim = Simulation(catalog, contract, "contract", sinks=[on_event], class_priorities=dict.fromkeys(("api-serving", "inference", "training"), 0))
    sim.add_jobs(trace.jobs)
    sim.run(samples=10)
    arrivals = {j.name: j.arrival for j in trace.jobs}
    recorded = recorded_waits(pods)
    pairs = [(w, first_start[n] - arrivals[n]) for n, w in recorded.items() if n in first_start and n in arrivals]
    if not pairs:
        raise TraceError(f"{pods}: no pod asked for whole GPUs and started in both the trace and the replay")
    rec = [max(r, 0.0) for r, _ in pairs]
    simulated = [s for _, s in pairs]
    peak = sim.rec.type_state[(CLOUD, POOL)][4]
    return Calibration(len(pairs), gpus, per_model, rec, simulated, wasserstein(rec, simulated), ks(rec, simulated), peak)


def write(c: Calibration, out: Path, title: str) -> list[str]:
    """calibration.json, qq.png and report.md; returns the report's lines."""
    import json

    from scheduler.sim.report import pyplot

    d = c.to_dict()
    (out / "calibration.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    rec, sim = sorted(c.recorded), sorted(c.simulated)
    floor = 1.0  # seconds: waits of 0 drawn at 1 s on the log axes
    ax.scatter([max(x, floor) for x in rec], [max(y, floor) for y in sim], s=6, alpha=0.6)
    top = max(rec[-1], sim[-1], 10.0)
    ax.plot([floor, top], [floor, top], color="#444444", linestyle="--", linewidth=1, label="simulated = recorded")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("recorded wait (s, creation to scheduled)")
    ax.set_ylabel("simulated wait (s, arrival to placement)")
    ax.set_title(f"Q-Q: {c.pods:,} whole-GPU pods that started\n{title}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(out / "qq.png")
    plt.close(fig)
    rows = [f"| p{round(q * 100)} | {fmt_seconds(d['quantiles'][f'p{round(q * 100)}']['recorded'])} | "
            f"{fmt_seconds(d['quantiles'][f'p{round(q * 100)}']['simulated'])} |" for q in QUANTILES]
    models = ", ".join(f"{m} {n:,}" for m, n in sorted(c.per_model.items(), key=lambda kv: -kv[1]))
    lines = [
        f"# Calibration: simulated vs recorded waits of {c.pods:,} whole-GPU pods ({title})", "",
        f"The replay ran on one pool of the cluster's {c.gpus:,} GPUs ({models}), answers and start-up instant, every class at "
        "one priority, no preemption. Recorded wait = scheduled_time - creation_time; simulated = placement - arrival.", "",
        "| quantile | recorded | simulated |", "| --- | --- | --- |", *rows,
        f"| mean | {fmt_seconds(d['mean']['recorded'])} | {fmt_seconds(d['mean']['simulated'])} |", "",
        f"Distance: 1-Wasserstein **{fmt_seconds(c.wasserstein)}** (the mean gap between matched quantiles); "
        f"Kolmogorov-Smirnov statistic **{c.ks:.3f}**. No pass/fail threshold. The replay held at most **{c.peak_share:.1%}** of "
        "the pool: where that is far below 100%, nothing waits for capacity in the replay, and the recorded waits measure what a "
        "pool does not model (placement on nodes, the real scheduler's own latency).", "",
        "Why they differ: fractional GPUs are rounded up to whole GPUs (the replay holds more than the cluster did); durations "
        "of pods still running at the trace's end are cut there; one pool has no node fragmentation (a gang fits if enough GPUs "
        "are free anywhere, where the real cluster needs them on one node); GPU models are merged; the real scheduler's order "
        "and priorities are not the engine's.", "",
        "![qq.png](qq.png)", "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    return lines


__all__ = ["Calibration", "calibrate", "ks", "wasserstein", "write"]
