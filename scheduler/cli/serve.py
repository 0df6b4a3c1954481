"""Serving commands: ``mcsched api-keys`` manages the endpoint's keys; ``mcsched loadgen``
replays a real request trace against a served model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.app import StateOpt, _state, app, err, out

keys_app = typer.Typer(help="API keys for the served OpenAI endpoint (stored as hashes in the state dir).", no_args_is_help=True)
app.add_typer(keys_app, name="api-keys")


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="A name for the key (lowercase letters, digits, '-'); shown in metrics.")],
    rate: Annotated[float, typer.Option("--rate", help="Requests per second allowed with this key (across gateway replicas).")] = 20.0,
    state_dir: StateOpt = None,
) -> None:
    """Create a key and print it once (only its hash is kept): use it as `Authorization: Bearer KEY`."""
    from scheduler.runtime.serve.keys import KeyStore

    store = KeyStore.in_dir(_state(state_dir))
    key = store.add(name, rate)
    print(key, flush=True)  # stdout: the key alone, for `KEY=$(mcsched api-keys add me)`
    err.print(f"api key {name!r} created ({rate:g} requests/s); it is shown only now. Stored as a hash in {store.path}", markup=False)


@keys_app.command("list")
def keys_list(state_dir: StateOpt = None) -> None:
    """The keys by name, creation time and rate (never the keys themselves)."""
    import time

    from scheduler.runtime.serve.keys import KeyStore

    keys = KeyStore.in_dir(_state(state_dir)).load()
    if not keys:
        err.print("no api keys: every request to the endpoint is refused (create one: mcsched api-keys add NAME)", markup=False)
    for k in keys:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k.created))
        out.print(f"{k.name}\tcreated {created}\t{k.rate:g} requests/s\tsha256:{k.sha256[:12]}", markup=False)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")], state_dir: StateOpt = None) -> None:
    """Delete a key: requests with it get 401 within a few seconds."""
    from scheduler.runtime.serve.keys import KeyStore

    KeyStore.in_dir(_state(state_dir)).revoke(name)
    out.print(f"api key {name!r} revoked (the gateway refuses it within seconds)", markup=False)


@app.command("loadgen")
def loadgen_cmd(
    trace: Annotated[Path, typer.Option("--trace", help="Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens).")],
    url: Annotated[str, typer.Option("--url", help="The served endpoint (loopback only).")] = "http://127.0.0.1:8000",
    model: Annotated[str | None, typer.Option("--model", help="Model name (default: the one model the endpoint serves).")] = None,
    speedup: Annotated[float, typer.Option("--speedup", min=0.001, max=10_000.0, help="Compress arrival times F-fold.")] = 1.0,
    duration: Annotated[float, typer.Option("--duration", min=0.1, max=86_400.0, help="Send the requests arriving within S seconds (after speed-up).")] = 60.0,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", min=1, max=4096, help="At most N requests in flight.")] = 32,
    max_requests: Annotated[int, typer.Option("--max-requests", min=1, max=1_000_000, help="Read at most this many trace rows.")] = 10_000,
    output: Annotated[Path, typer.Option("--out", help="Where to write the JSON results.")] = Path("loadgen.json"),
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="OPENAI_API_KEY", help="The key to send (default: $OPENAI_API_KEY).")] = None,
) -> None:
    """Replay a trace's arrivals, prompt and output sizes against the OpenAI endpoint; report TTFT, latency, throughput."""
    import asyncio  # here, not at module level: every mcsched run imports this module

    from scheduler.runtime.serve.loadgen import Report, check_loopback, discover_model, read_trace, replay

    base = check_loopback(url)
    requests = read_trace(trace, max_requests)
    name = model or asyncio.run(discover_model(base, api_key))
    due = sum(1 for r in requests if r.at / speedup <= duration)
    err.print(
        f"replaying {due:,} requests (those arriving within {duration:g} s at {speedup:g}x, of {len(requests):,} trace rows read; "
        f"--max-requests {max_requests:,}) from {trace.name} against {name} at {base}",
        markup=False,
    )
    report = Report(base, name, str(trace), speedup, duration, max_concurrency, api_key=api_key)
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("requests"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("replay", total=due)
            asyncio.run(replay(base, name, requests, speedup=speedup, duration=duration, max_concurrency=max_concurrency,
                               report=report, progress=lambda done, _total: bar.update(task, completed=done)))
    else:
        asyncio.run(replay(base, name, requests, speedup=speedup, duration=duration, max_concurrency=max_concurrency, report=report))
    summary = report.summary()
    output.write_text(json.dumps(summary, indent=2) + "\n")
    _print(summary)
    out.print(f"results written to {output}", markup=False)


def _print(s: dict[str, Any]) -> None:
    def q(d: dict[str, float | None]) -> str:
        return " / ".join("-" if d[k] is None else f"{d[k]:.3f}s" for k in ("p50", "p99"))

    lines = [
        f"requests      {s['requests']} sent, {s['ok']} ok, errors {s['errors'] or 'none'}, {s['lateStarts']} started late (concurrency cap)",
        f"TTFT          p50 / p99  {q(s['ttftSeconds'])}",
        f"latency       p50 / p99  {q(s['latencySeconds'])}",
        f"throughput    {s['throughput']['requestsPerSecond']} req/s, {s['throughput']['outputTokensPerSecond']} output tokens/s over {s['wallSeconds']:.1f}s",
    ]
    for cloud, replicas in s["replicasByCloud"].items():
        lines.append(f"replicas      {cloud}: {len(replicas)} ({', '.join(replicas)}), {s['requestsByCloud'][cloud]} requests")
    for line in lines:
        out.print(line, markup=False)
