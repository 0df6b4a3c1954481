"""Evidence cost in the service soak: record MACs, Merkle hashing, checkpoint signing and witnessing
as a share of the scheduler's CPU (issue 27: goal < 20%).

Runs the same ``SchedulerService`` the Ray actor runs (real SQLite ledger, real metrics),
configured with a witness that runs in **its own process** (``mcsched witness run`` on
loopback, as the holder would run it), and drives it like the soak: submissions in requests
of ``--batch`` jobs (1: one job per ``ray job submit``, the live path), a share of running
work finishing and some queued work cancelled between requests.

The evidence's CPU is attributed exactly, not estimated: the functions that do nothing but
evidence are wrapped with per-thread CPU clocks: the record MAC (one per transaction), the
Merkle leaf and node hashing (at each checkpoint), the checkpoint's Ed25519 signed note, and
every round of the background cosigner (reading new leaves, the consistency proof, the HTTP
round trip, storing the cosignature; on its own thread). The share is their sum over the
process's CPU time for the whole run (all threads). The witness's own CPU is the holder's,
in its process, and not counted.

    python benchmarks/evidence.py [--jobs 20000] [--batch 1] [--seed 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.soak import doc  # noqa: E402
from scheduler.ledger import signing, store, witness  # noqa: E402
from scheduler.ledger.signing import load_or_create_key, log_verifier  # noqa: E402
from scheduler.loading import load_catalog, load_contract  # noqa: E402
from scheduler.paths import default_catalog, default_contract  # noqa: E402
from scheduler.runtime.service import SchedulerService  # noqa: E402

ORIGIN = "bench.example/evidence"
CPU: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
_depth = threading.local()


def attribute(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name`` so its own thread's CPU time is added to ``label`` (outermost call only)."""
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if getattr(_depth, "on", False):
            return original(*args, **kwargs)
        _depth.on = True
        t = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            CPU[label] += time.thread_time() - t
            CALLS[label] += 1
            _depth.on = False

    setattr(owner, name, timed)


def start_witness(tmp: Path, vkey: str) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "scheduler", "witness", "run", "--name", "bench.example/w1", "--key", str(tmp / "w1.key"),
            "--state", str(tmp / "w1-state.json"), "--log", vkey, "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"the witness did not start: {line.strip()}")
    return proc, found.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1, help="jobs per submit request (1: the live path, one job per request)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mcsched-evidence-"))
    os.environ["MCSCHED_LEDGER_ORIGIN"] = ORIGIN
    proc = None
    try:
        vkey = log_verifier(ORIGIN, load_or_create_key(tmp / "ledger-signing.key").public_key()).vkey()
        proc, url = start_witness(tmp, vkey)
        attribute(signing.RecordMac, "__call__", "record MACs")
        attribute(store.Ledger, "_hash_pending", "Merkle hashing")
        attribute(signing.Checkpoint, "signed", "checkpoint signing")
        attribute(witness.Cosigner, "round", "witnessing (cosigner thread)")
        run(args, tmp, url)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path, url: str) -> None:
    rng = random.Random(args.seed)
    catalog = load_catalog(default_catalog())
    contract = load_contract(default_contract(), catalog)
    svc = SchedulerService(catalog.model_dump(mode="json", by_alias=True), contract.model_dump(mode="json", by_alias=True),
                           str(tmp / "ledger.db"), metrics_port=None, witnesses=[url])  # fmt: skip
    loop = asyncio.new_event_loop()

    def call(method: str, *a: Any) -> Any:
        return loop.run_until_complete(getattr(svc, method)(*a))

    t0, cpu0 = time.perf_counter(), time.process_time()
    call("ping")
    engine = svc.engine
    assert engine is not None and svc.ledger is not None and svc.cosigner is not None
    submitted = 0
    while submitted < args.jobs:
        resp = call("submit", [doc(f"e{submitted + i}", rng) for i in range(args.batch)])
        assert resp["ok"], resp["error"]
        submitted += args.batch
        if submitted % 500 < args.batch:
            running = [n for n, r in engine.jobs.items() if r.state == "running"]
            for name in rng.sample(running, len(running) // 3):
                call("release", name, "finished")
            queued = list(engine.queue.names())
            for name in rng.sample(queued, min(len(queued) // 50, 40)):
                call("cancel", name)
    svc.ledger.sign()  # the last second's records, as the idle timer would
    deadline = time.monotonic() + 30
    while svc.cosigner.lag() > 0 and time.monotonic() < deadline:  # the witness catches up with the last checkpoint
        time.sleep(0.05)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    records, cps = len(svc.ledger), svc.ledger.checkpoint_id
    svc.cosigner.stop()
    svc.ledger.close()
    print(f"service soak: {submitted:,} jobs in requests of {args.batch}, {records:,} ledger records, {cps:,} checkpoints "
          f"({wall:.1f}s wall, {cpu:.2f}s CPU, all threads); witness in its own process at {url}")
    print(f"  last cosigner round: {'; '.join(svc.cosigner.last)}")
    total = 0.0
    for label in ("record MACs", "Merkle hashing", "checkpoint signing", "witnessing (cosigner thread)"):
        total += CPU[label]
        print(f"  {label:<30} {CPU[label]:7.3f}s CPU  {CPU[label] / cpu:6.1%}  ({CALLS[label]:,} calls)")
    share = total / cpu
    print(f"MACs + signing + witnessing: {total:.3f}s of {cpu:.2f}s CPU = {share:.1%} of the scheduler's CPU "
          f"(goal < 20%): {'MET' if share < 0.20 else 'MISSED'}")
    os.environ.pop("MCSCHED_LEDGER_ORIGIN", None)


if __name__ == "__main__":
    main()
