"""Serving benchmark on a local cluster: the OpenAI endpoint's throughput, and scale-up speed.

1. A served model with one replica (the mock model at ``--tps`` tokens/s, ``--max-tokens``
   per answer, so the stack's cost dominates): requests/s and p50/p99 latency of
   non-streaming chat completions at concurrency 1, 8 and 32, each for ``--seconds``.
2. A second served model (target 1 request in flight per replica, 2 s cool-down): a
   client load steps up until it runs ``--replicas`` replicas, then stops; repeated
   ``--cycles`` times. For every scale-up: seconds from the engine's placement decision
   (the ledger's ``placed`` record of ``<job>-r<k>``) to the first answer a client gets from
   that replica (its ``x-mcsched-replica`` header). Goal: < 10 s p99.

Everything runs on its own cluster (own state dir, free ports) and is stopped at the end.

    python benchmarks/serve.py [--seconds 10] [--cycles 3] [--replicas 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.events import Placed  # noqa: E402
from scheduler.ledger import Ledger  # noqa: E402
from scheduler.loading import load_catalog, load_contract  # noqa: E402
from scheduler.paths import default_catalog, default_contract  # noqa: E402
from scheduler.runtime.cluster import ClusterInfo, down, free_port, up  # noqa: E402
from scheduler.runtime.serve.keys import KeyStore  # noqa: E402

HEADERS: dict[str, str] = {}  # the API key every request sends (made in main)


def served(name: str, model: str, **serve: Any) -> dict[str, Any]:
    return {"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"class": "api-serving", "gpuType": "H100", "priority": 100,
                     "serve": {"model": model, "gpusPerReplica": 8, **serve}}}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))]


async def wait_answering(url: str, model: str, timeout: float = 300) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        while time.monotonic() < deadline:
            try:
                body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
                async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(1)
    raise RuntimeError(f"{model} did not answer at {url} within {timeout:.0f}s")


async def closed_loop(url: str, model: str, concurrency: int, seconds: float, max_tokens: int) -> tuple[int, list[float], int]:
    """``concurrency`` workers sending back-to-back requests for ``seconds``."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me about the weather."}], "max_tokens": max_tokens}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            start = time.monotonic()
            async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                await resp.read()
                if resp.status == 200:
                    latencies.append(time.monotonic() - start)
                else:
                    errors += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), headers=HEADERS) as session:
        t0 = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.monotonic() - t0
    return round(len(latencies) / wall), latencies, errors


def throughput(url: str, model: str, seconds: float, max_tokens: int, tps: float) -> None:
    print(f"\n1. throughput: one replica, mock model {max_tokens} tokens at {tps:g} tokens/s per answer "
          f"(>= {max_tokens / tps * 1000:.0f} ms of generation), non-streaming chat completions, {seconds:g}s per level")
    print(f"   {'concurrency':>11}  {'requests/s':>10}  {'p50 ms':>8}  {'p99 ms':>8}  {'errors':>6}")
    for c in (1, 8, 32):
        rps, lat, errors = asyncio.run(closed_loop(url, model, c, seconds, max_tokens))
        print(f"   {c:>11}  {rps:>10}  {pct(lat, 0.5) * 1000:>8.0f}  {pct(lat, 0.99) * 1000:>8.0f}  {errors:>6}")


async def scale_cycle(url: str, model: str, replicas: int, first_seen: dict[str, float], timeout: float = 240) -> None:
    """Add one streaming client per second until ``replicas`` replicas answered, then stop."""
    import aiohttp

    stop = asyncio.Event()
    this_cycle: set[str] = set()
    body = {"model": model, "messages": [{"role": "user", "content": "go"}], "max_tokens": 40, "stream": True}

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                name = resp.headers.get("x-mcsched-replica", "")
                if resp.status == 200:
                    first_seen.setdefault(name, time.time())
                    this_cycle.add(name)
                async for _ in resp.content:
                    pass

    async with aiohttp.ClientSession(headers=HEADERS) as session:
        tasks: list[asyncio.Task[None]] = []
        deadline = time.monotonic() + timeout
        while len(this_cycle) < replicas and time.monotonic() < deadline:
            if len(tasks) < 4 * replicas:
                tasks.append(asyncio.create_task(client(session)))
            await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def scale_up(info: ClusterInfo, url: str, job: str, model: str, replicas: int, cycles: int) -> None:
    import ray

    from scheduler.runtime.actor import get_actor

    print(f"\n2. scale-up: target 1 request in flight per replica, 1 -> {replicas} replicas, {cycles} cycle(s)")
    first_seen: dict[str, float] = {}
    for cycle in range(cycles):
        asyncio.run(scale_cycle(url, model, replicas, first_seen))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # back to one replica before the next cycle
            placed = [r for r in ray.get(get_actor().status.remote(None)) if r["job"].startswith(f"{job}-r") and r["outcome"] == "placed"]
            if len(placed) <= 1:
                break
            time.sleep(1)
        print(f"   cycle {cycle + 1}: {len(first_seen)} replicas have answered so far")
    placed_at = {e.job: e.at for e in Ledger(Path(info.state_dir) / "ledger.db", readonly=True).events()
                 if isinstance(e, Placed) and e.job.startswith(f"{job}-r") and e.job != f"{job}-r1"}
    took = sorted(first_seen[name] - at for name, at in placed_at.items() if name in first_seen)
    if not took:
        print("   no scale-up was observed")
        return
    print(f"   {len(took)} scale-ups: decision -> new replica answering p50 {pct(took, 0.5):.2f}s, "
          f"p99 {pct(took, 0.99):.2f}s, max {took[-1]:.2f}s (goal < 10 s p99) "
          f"{'OK' if pct(took, 0.99) < 10 else 'MISSED'}")
    print("   each: " + ", ".join(f"{t:.1f}s" for t in took))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--tps", type=float, default=1000.0, help="mock model tokens/s for the throughput part")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=4)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="mcsv-", dir="/tmp"))
    os.environ["MCSCHED_HOME"] = str(state)
    HEADERS["authorization"] = "Bearer " + KeyStore.in_dir(state).add("bench", rate=100_000)  # keys on: every request is checked
    catalog = load_catalog(default_catalog())
    jobs: list[str] = []
    client: Any = None
    try:
        info = up(catalog, load_contract(default_contract(), catalog), state, metrics_port=free_port(), log=lambda m: print(m, file=sys.stderr)).info
        from ray.job_submission import JobSubmissionClient  # only now: ray reads the token settings at import

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        client = JobSubmissionClient(info.dashboard_url)
        print(f"cluster up (state {state}); serving on {url}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        for doc in (
            served("bench-fast", "fast", replicas={"min": 1, "max": 1}, tokensPerSecond=args.tps, targetOngoingRequests=1000),
            served("bench-scale", "scaly", replicas={"min": 1, "max": args.replicas}, tokensPerSecond=20,
                   targetOngoingRequests=1, scaleDownDelaySeconds=2),
        ):
            work = state / doc["metadata"]["name"]
            work.mkdir()
            (work / "api.yaml").write_text(yaml.safe_dump(doc))
            jobs.append(client.submit_job(entrypoint="python -m scheduler run api.yaml",
                                          runtime_env={"working_dir": str(work), "env_vars": {"MCSCHED_SERVE_PORT": str(port)}}))
            asyncio.run(wait_answering(url, doc["spec"]["serve"]["model"]))
        from scheduler.runtime.cluster import connect

        connect(info.gcs_address)
        throughput(url, "fast", args.seconds, args.max_tokens, args.tps)
        scale_up(info, url, "bench-scale", "scaly", args.replicas, args.cycles)
        print("\ncontroller log of the scaled service (last lines):")
        for line in client.get_job_logs(jobs[1]).splitlines()[-6:]:
            print(f"   {line}")
    finally:
        for sid in jobs:
            client.stop_job(sid)
        time.sleep(3 if jobs else 0)
        import ray

        ray.shutdown()  # disconnect first, or the stopping raylet's messages end up on our terminal
        down(state)
        shutil.rmtree(state, ignore_errors=True)
        print(json.dumps({"cleaned": str(state)}))


if __name__ == "__main__":
    main()
