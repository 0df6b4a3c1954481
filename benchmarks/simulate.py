"""Simulator throughput on the real 8,152-pod Alibaba trace, and the policy comparison.

Prints wall time and simulated events per second (engine events + simulation events,
ledger written) for the full replay, then contract vs cheapest vs azure-only on the same
trace (as recorded, and with arrivals compressed 100x so the clouds fill up).
Targets: < 10 s and >= 100,000 events/s.

    python benchmarks/simulate.py [--trace PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.ledger import Ledger  # noqa: E402
from scheduler.loading import load_catalog, load_contract  # noqa: E402
from scheduler.paths import default_catalog, default_contract  # noqa: E402
from scheduler.sim.simulator import POLICIES, Simulation  # noqa: E402
from scheduler.sim.traces import read_alibaba  # noqa: E402

DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"


def replay(trace: Path, policy: str, speedup: float, ledger_dir: Path | None) -> tuple[dict, float]:
    catalog = load_catalog(default_catalog())
    contract = load_contract(default_contract(), catalog)
    started = time.perf_counter()
    jobs = read_alibaba(trace)
    ledger = Ledger(ledger_dir / f"{policy}-{speedup:g}.db") if ledger_dir else None
    sim = Simulation(catalog, contract, policy, sinks=[ledger] if ledger else [])
    sim.add_jobs(jobs, speedup)
    sim.run(flush=ledger.flush if ledger else None)
    if ledger:
        ledger.flush()
        ledger.close()
    return sim.summary(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mcsched-sim-"))
    summary, wall = replay(args.trace, "contract", 1.0, tmp)
    events = summary["events"]["engine"] + summary["events"]["simulation"]
    print(f"replayed {summary['jobs']:,} GPU jobs of {args.trace.name} (8,152 pods) in {wall:.2f}s wall, "
          f"{events:,} events = {events / wall:,.0f} events/s (ledger written; targets < 10 s, >= 100,000/s)")
    for speedup in (1.0, 100.0, 2000.0):
        print(f"\npolicy comparison, arrivals x{speedup:g}:")
        print(f"{'policy':<11} {'holder GPU-h':>12} {'cost USD':>12} {'violations':>10} {'api p99 wait':>12} {'train p99 wait':>14} {'queued at end':>13}  jobs per cloud")
        for policy in POLICIES:
            s, _ = replay(args.trace, policy, speedup, None)
            w = s["waitSeconds"]
            print(f"{policy:<11} {s['holderShareOfGpuHours']:>12.1%} {s['costUsdTotal']:>12,.0f} {sum(s['contractViolations'].values()):>10,} "
                  f"{w.get('api-serving', {}).get('p99', 0):>11,.0f}s {w.get('training', {}).get('p99', 0):>13,.0f}s "
                  f"{sum(s['stillQueued'].values()):>13,}  {dict(sorted(s['jobsPerCloud'].items()))}")


if __name__ == "__main__":
    main()
