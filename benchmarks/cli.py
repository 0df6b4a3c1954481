"""End-to-end CLI speed on large job files: ``mcsched validate`` and ``mcsched plan -o json``.

Each size gets one generated file (a realistic mix of classes, GPU types, sizes and
optional simulated workloads, block-style YAML like ``deploy/examples/job.yaml``). Every
command runs as a user runs it: a fresh ``mcsched`` process, output written to a file.
Reported per command and size: wall seconds, CPU seconds (user+sys of the process: the
fairer figure on a shared machine), jobs/s on both, and the per-job cost ratio of the
largest size to the smallest. Targets: >= 10,000 jobs/s end to end, ratio <= 1.5; a missed
target is flagged and makes the exit code 1. Everything is written under one temp dir,
removed at the end.

Before timing, the package is byte-compiled into its ``__pycache__`` (and the benchmark
says so): an installed package, or any second run, has its bytecode, but with
``PYTHONDONTWRITEBYTECODE`` set (as on our dev machines) every timed process would compile
the scheduler's source again. The machine's load average is printed at the start and end.

    python benchmarks/cli.py [--sizes 10000 100000] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_JOBS_PER_S = 10_000
TARGET_RATIO = 1.5


def job_yaml(i: int, rng: random.Random) -> str:
    cls = rng.choice(["training"] * 5 + ["inference"] * 3 + ["api-serving"] * 2)
    gpu_type = "H100" if cls == "api-serving" else rng.choice(["H100", "H100", "H200", "GB200", "MI300X"])
    lines = [
        "apiVersion: mcsched.io/v1",
        "kind: Job",
        "metadata:",
        f"  name: job-{i}",
        "spec:",
        f"  class: {cls}",
        f"  gpus: {rng.choice([1, 2, 4, 8, 8, 16, 32, 64])}",
        f"  gpuType: {gpu_type}",
        f"  priority: {rng.randrange(0, 100)}",
        f"  durationHours: {rng.choice([1, 2, 6, 24, 72])}",
    ]
    if rng.random() < 0.3:
        lines += ["  workload:", f"    steps: {rng.randrange(10, 100)}", "    stepSeconds: 0.1", "    checkpointEvery: 5"]
    return "\n".join(lines) + "\n"


def write_jobs(path: Path, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            if i:
                f.write("---\n")
            f.write(job_yaml(i, rng))


def run(args: list[str], out: Path) -> tuple[float, float]:
    """(wall, cpu) seconds of one mcsched process; fails loudly if the command does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with out.open("wb") as sink:
        proc = subprocess.run([sys.executable, "-m", "scheduler", *args], stdout=sink, stderr=subprocess.PIPE, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"mcsched {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def byte_compile() -> str:
    """Compile the package's bytecode once, as an installed package has it; say so and why."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "scheduler")], check=True)
    why = (
        "PYTHONDONTWRITEBYTECODE is set, so without this every timed process would compile the source again"
        if os.environ.get("PYTHONDONTWRITEBYTECODE")
        else "so the first timed process does not compile the source"
    )
    return f"byte-compiled scheduler/ into __pycache__ before timing ({why}; an installed package or a second run has bytecode)"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest counts (shared machines are noisy)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files and outputs")
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mcsched-bench-cli-"))
    missed: list[str] = []
    print(load_average())
    print(byte_compile(), flush=True)
    try:
        files = {}
        for n in opts.sizes:
            files[n] = work / f"jobs-{n}.yaml"
            write_jobs(files[n], n)
            print(f"generated {files[n].name}: {n:,} jobs, {files[n].stat().st_size / 2**20:.1f} MiB", flush=True)
        print(f"\n{'command':<22} {'jobs':>8} {'wall s':>8} {'cpu s':>7} {'jobs/s wall':>12} {'jobs/s cpu':>11}")
        commands = {"validate": ["validate"], "plan -o json": ["plan", "-o", "json"]}
        for label, args in commands.items():
            per_job: dict[int, float] = {}
            for n in opts.sizes:
                best = min(run([*args, str(files[n])], work / "out") for _ in range(opts.repeat))
                wall, cpu = best
                per_job[n] = cpu / n
                rate_wall, rate_cpu = n / wall, n / cpu
                flag = "" if rate_wall >= TARGET_JOBS_PER_S else f"   << below {TARGET_JOBS_PER_S:,} jobs/s"
                if flag:
                    missed.append(f"mcsched {label} on {n:,} jobs: {rate_wall:,.0f} jobs/s (wall)")
                print(f"mcsched {label:<14} {n:>8,} {wall:>8.2f} {cpu:>7.2f} {rate_wall:>12,.0f} {rate_cpu:>11,.0f}{flag}", flush=True)
            lo, hi = min(opts.sizes), max(opts.sizes)
            if lo != hi:
                ratio = per_job[hi] / per_job[lo]
                flag = "" if ratio <= TARGET_RATIO else f"   << above {TARGET_RATIO}"
                if flag:
                    missed.append(f"mcsched {label}: per-job cost {hi:,}/{lo:,} = {ratio:.2f}")
                print(f"mcsched {label:<14} per-job CPU cost {hi:,} vs {lo:,}: x{ratio:.2f}{flag}")
    finally:
        if opts.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{load_average()}")
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
