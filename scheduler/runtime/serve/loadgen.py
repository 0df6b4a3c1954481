"""Replay a real LLM request trace against a served model's OpenAI endpoint.

Each row of the Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``)
becomes one streamed ``POST /v1/completions`` sent at its (sped-up) arrival time, with a
prompt of ``ContextTokens`` tokens and ``max_tokens = GeneratedTokens``. Time to first
token and latency are measured at the client; the ``x-mcsched-*`` headers say which
replica on which cloud answered.

Safety: only loopback URLs are accepted (this is a load generator, not a scanner), and a
run is bounded in requests (``max_requests``) and in time (``duration`` plus a drain
deadline after which unfinished requests are cancelled and counted as timeouts).
"""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scheduler.errors import MCSchedError, RuntimeUnavailable, TraceError, UsageError
from scheduler.runtime.serve.openai import MAX_TOKENS_LIMIT

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MAX_PROMPT_TOKENS = 100_000  # keeps every request under the gateway's body cap
DRAIN_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class TraceRequest:
    at: float  # seconds from the trace's first request
    prompt_tokens: int
    output_tokens: int


def read_trace(path: Path, max_requests: int) -> list[TraceRequest]:
    """The first ``max_requests`` rows, as offsets from the first arrival; ``file:line: column: why`` on a bad row."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror})") from None
    rows: list[tuple[float, int, int]] = []
    with fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)} (an Azure LLM inference trace has {', '.join(COLUMNS)})")
        try:
            for row in reader:
                if len(rows) >= max_requests:
                    break
                line = reader.line_num
                try:
                    at = datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp()
                except ValueError:
                    raise TraceError(f"{path}:{line}: TIMESTAMP: not a timestamp: {row['TIMESTAMP']!r}") from None
                counts = []
                for col in ("ContextTokens", "GeneratedTokens"):
                    raw = row[col] or ""
                    if not raw.strip().isdigit():
                        raise TraceError(f"{path}:{line}: {col}: not a token count: {raw!r}")
                    counts.append(int(raw))
                rows.append((at, counts[0], counts[1]))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(f"{path}:{reader.line_num}: unreadable row ({exc})") from None
    if not rows:
        raise TraceError(f"{path}: no requests in the trace")
    rows.sort()
    start = rows[0][0]
    return [TraceRequest(at - start, min(p, MAX_PROMPT_TOKENS), min(max(g, 1), MAX_TOKENS_LIMIT)) for at, p, g in rows]


def check_loopback(url: str) -> str:
    """The base URL without a trailing slash; refuses anything but http on a loopback host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = (host == "localhost" or ipaddress.ip_address(host).is_loopback) and (parts.port or 80) > 0
    except ValueError:  # not an IP address, or a bad port
        loopback = False
    if parts.scheme != "http" or not loopback or parts.query or parts.fragment:
        raise UsageError(f"--url must be http://127.0.0.1:PORT (loopback only: loadgen refuses to send load elsewhere), got {url!r}")
    return f"http://{parts.netloc}{parts.path.rstrip('/')}"


@dataclass
class Outcome:
    code: int
    ttft: float | None = None
    latency: float | None = None
    tokens: int = 0
    cloud: str = ""
    replica: str = ""
    error: str = ""


@dataclass
class Report:
    url: str
    model: str
    trace: str
    speedup: float
    duration_seconds: float
    max_concurrency: int
    outcomes: list[Outcome] = field(default_factory=list)
    wall_seconds: float = 0.0
    late_starts: int = 0
    api_key: str | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        ok = [o for o in self.outcomes if o.code == 200 and not o.error]
        errors = Counter(o.error or str(o.code) for o in self.outcomes if o not in ok)
        replicas: dict[str, set[str]] = {}
        per_cloud: Counter[str] = Counter()
        for o in ok:
            replicas.setdefault(o.cloud, set()).add(o.replica)
            per_cloud[o.cloud] += 1
        wall = max(self.wall_seconds, 1e-9)
        return {
            "url": self.url,
            "model": self.model,
            "trace": self.trace,
            "speedup": self.speedup,
            "durationSeconds": self.duration_seconds,
            "maxConcurrency": self.max_concurrency,
            "requests": len(self.outcomes),
            "ok": len(ok),
            "errors": dict(sorted(errors.items())),
            "lateStarts": self.late_starts,
            "ttftSeconds": _quantiles([o.ttft for o in ok if o.ttft is not None]),
            "latencySeconds": _quantiles([o.latency for o in ok if o.latency is not None]),
            "throughput": {
                "requestsPerSecond": round(len(ok) / wall, 3),
                "outputTokensPerSecond": round(sum(o.tokens for o in ok) / wall, 1),
            },
            "wallSeconds": round(self.wall_seconds, 3),
            "replicasByCloud": {c: sorted(r) for c, r in sorted(replicas.items())},
            "requestsByCloud": dict(sorted(per_cloud.items())),
        }


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    s = sorted(values)
    return {"p50": round(_pick(s, 0.50), 4), "p99": round(_pick(s, 0.99), 4)}


def _pick(s: list[float], q: float) -> float:
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _prompt(tokens: int, cache: dict[int, str]) -> str:
    text = cache.get(tokens)
    if text is None:
        text = cache[tokens] = " ".join(["hello"] * max(tokens, 1))
    return text


async def _one(session: Any, base: str, model: str, req: TraceRequest, prompts: dict[int, str]) -> Outcome:
    import aiohttp

    body = {"model": model, "prompt": _prompt(req.prompt_tokens, prompts), "max_tokens": req.output_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.monotonic()
    try:
        async with session.post(f"{base}/v1/completions", json=body) as resp:
            out = Outcome(resp.status, cloud=resp.headers.get("x-mcsched-cloud", ""), replica=resp.headers.get("x-mcsched-replica", ""))
            if resp.status != 200:
                await resp.read()
                return out
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    out.latency = time.monotonic() - started
                    break
                event = json.loads(data)
                if "error" in event:
                    out.error = str(event["error"].get("code") or "stream-error")
                    break
                if out.ttft is None and event.get("choices"):
                    out.ttft = time.monotonic() - started
                if event.get("usage"):
                    out.tokens = int(event["usage"]["completion_tokens"])
            if out.latency is None and not out.error:
                out.error = "incomplete-stream"
            return out
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        return Outcome(0, error=type(exc).__name__)


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


async def discover_model(base: str, api_key: str | None = None) -> str:
    """The one served model (``GET /v1/models``), so a user need not type its name."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(headers=auth_headers(api_key)) as session, session.get(
            f"{base}/v1/models", timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            if resp.status != 200:
                raise MCSchedError(f"{base}/v1/models answered {resp.status}: {(await resp.text())[:200]} (pass --api-key or set OPENAI_API_KEY)")
            models = [m["id"] for m in (await resp.json())["data"]]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        raise RuntimeUnavailable(f"cannot list models at {base}/v1/models: {type(exc).__name__}: {exc}") from None
    if len(models) != 1:
        raise MCSchedError(f"{base} serves {len(models)} models ({', '.join(models) or 'none'}): pass --model")
    return str(models[0])


async def replay(
    base: str,
    model: str,
    requests: list[TraceRequest],
    *,
    speedup: float,
    duration: float,
    max_concurrency: int,
    report: Report,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Report:
    """Send each request at ``at / speedup`` seconds (those within ``duration``), at most
    ``max_concurrency`` at once; a request that finds no free slot starts late (counted)."""
    import aiohttp

    due = [r for r in requests if r.at / speedup <= duration]
    slots = asyncio.Semaphore(max_concurrency)
    prompts: dict[int, str] = {}
    done = 0
    start = time.monotonic()

    async def fire(req: TraceRequest, session: Any) -> None:
        nonlocal done
        delay = start + req.at / speedup - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if slots.locked():
            report.late_starts += 1
        async with slots:
            outcome = await _one(session, base, model, req, prompts)
        report.outcomes.append(outcome)
        done += 1
        progress(done, len(due))

    connector = aiohttp.TCPConnector(limit=max_concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=DRAIN_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=auth_headers(report.api_key)) as session:
        tasks = [asyncio.create_task(fire(r, session)) for r in due]
        _done, unfinished = await asyncio.wait(tasks, timeout=duration + DRAIN_SECONDS) if tasks else (set(), set())
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        report.outcomes.extend(Outcome(0, error="timeout") for _ in unfinished)
    report.wall_seconds = time.monotonic() - start
    return report
