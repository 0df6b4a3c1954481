"""The sinks alone: CPU per engine event of the metrics sink and of the ledger's writer.

The soak (``benchmarks/soak.py``) and the simulator's replays (``benchmarks/simulate.py``)
time the engine and its sinks together, and the engine is most of both; this replays one
recorded event stream through each sink on its own, so a change to a sink is measured
without the engine's noise. The stream is the soak's (the same service, catalog, contract,
job mix and seed: submissions in batches of 500, a third of running work finishing and 2%
of the queue cancelled every 5,000 submissions), recorded once in memory, with the end of
each service call marked: the ledger commits one transaction per call, as the service does.

Figures (CPU time, best of --repeat runs; the load average is printed):
- the metrics sink (``scheduler.metrics.Metrics``: prometheus series, plan metrics and the
  live contract checker) per event;
- the ledger's writer per record, durable (WAL, as the service writes it) and
  ``durable=False`` (as a replay's worker writes it), one transaction per service call;
- ``records.encode`` alone per record (the canonical JSON leaf).

    python benchmarks/sinks.py [--jobs 30000] [--repeat 3]

Run it from two checkouts to compare them (each imports the ``scheduler`` beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.soak import doc  # noqa: E402
from scheduler.events import Event  # noqa: E402
from scheduler.ledger import Ledger  # noqa: E402
from scheduler.ledger.records import encode  # noqa: E402
from scheduler.loading import load_catalog, load_contract  # noqa: E402
from scheduler.metrics import Metrics  # noqa: E402
from scheduler.paths import default_catalog, default_contract  # noqa: E402
from scheduler.runtime.service import SchedulerService  # noqa: E402


def record(jobs: int, tmp: Path) -> tuple[list[Event], list[int]]:
    """The soak's event stream and where each service call ended (its transaction's last event + 1)."""
    rng = random.Random(3)
    catalog = load_catalog(default_catalog())
    contract = load_contract(default_contract(), catalog)
    svc = SchedulerService(catalog.model_dump(mode="json", by_alias=True), contract.model_dump(mode="json", by_alias=True),
                           str(tmp / "recording.db"), metrics_port=None)
    loop = asyncio.new_event_loop()
    events: list[Event] = []
    ends: list[int] = []

    def call(method: str, *args: Any) -> None:
        loop.run_until_complete(getattr(svc, method)(*args))
        if len(events) > (ends[-1] if ends else 0):
            ends.append(len(events))

    call("ping")
    engine = svc.engine
    assert engine is not None
    events.append(engine.configured_event())  # what the service's ledger and metrics saw first
    ends.append(1)
    engine.subscribe(events.append)
    submitted = 0
    while submitted < jobs:
        call("submit", [doc(f"s{submitted + i}", rng) for i in range(500)])
        submitted += 500
        if submitted % 5000 == 0:
            running = [name for name, r in engine.jobs.items() if r.state == "running"]
            for name in rng.sample(running, len(running) // 3):
                call("release", name, "finished")
            queued = list(engine.queue.names())
            for name in rng.sample(queued, min(len(queued) // 50, 400)):
                call("cancel", name)
    loop.close()
    return events, ends


def best(repeat: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        cpu = time.process_time()
        run()
        times.append(time.process_time() - cpu)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mcsched-sinks-"))
    try:
        events, ends = record(args.jobs, tmp)
        n = len(events)
        print(f"the soak's stream: {n:,} events from {args.jobs:,} submissions in {len(ends):,} service calls "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

        def metrics() -> None:
            m = Metrics()
            for ev in events:
                m(ev)

        def ledger(**options: Any) -> Callable[[], None]:
            def run() -> None:
                folder = Path(tempfile.mkdtemp(dir=tmp))
                led = Ledger(folder / "ledger.db", signing_key=folder / "ledger-signing.key", **options)
                start = 0
                for end in ends:
                    for ev in events[start:end]:
                        led(ev)
                    led.flush()
                    start = end
                led.close()
                shutil.rmtree(folder)
            return run

        def encoding() -> None:
            for seq, ev in enumerate(events, 1):
                encode(seq, ev, 0 if hasattr(ev, "job") else None)

        t = best(args.repeat, metrics)
        print(f"metrics sink: {t:.3f} s CPU, {t / n * 1e6:.2f} us per event")
        t = best(args.repeat, ledger())
        print(f"ledger writer, durable (WAL): {t:.3f} s CPU, {t / n * 1e6:.2f} us per record")
        if "durable" in inspect.signature(Ledger).parameters:  # absent before the replay's non-durable ledger
            t = best(args.repeat, ledger(durable=False))
            print(f"ledger writer, durable=False: {t:.3f} s CPU, {t / n * 1e6:.2f} us per record")
        t = best(args.repeat, encoding)
        print(f"record encoding alone: {t:.3f} s CPU, {t / n * 1e6:.2f} us per record")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
