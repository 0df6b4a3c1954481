"""The trace replayer against a stand-in endpoint: arrival pacing, measurements, refusals."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from scheduler.errors import MCSchedError, TraceError
from scheduler.runtime.serve.loadgen import Report, check_loopback, read_trace, replay

TRACE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,4
2023-11-16 18:15:46.9951690,396,3
2023-11-16 18:15:47.6805900,12,2
2023-11-16 18:16:46.6805900,12,2
"""


def write(tmp: Path, text: str) -> Path:
    path = tmp / "trace.csv"
    path.write_text(text)
    return path


def test_trace_rows_become_offsets_prompt_and_output_sizes(tmp_path: Path) -> None:
    reqs = read_trace(write(tmp_path, TRACE), max_requests=3)
    assert [(round(r.at, 3), r.prompt_tokens, r.output_tokens) for r in reqs] == [(0.0, 374, 4), (0.315, 396, 3), (1.0, 12, 2)]


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("a,b\n1,2\n", "missing column(s) TIMESTAMP, ContextTokens, GeneratedTokens"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", "trace.csv:2: TIMESTAMP: not a timestamp"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,-3,2\n", "trace.csv:2: ContextTokens: not a token count"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests"),
    ],
)
def test_a_bad_trace_names_file_line_and_column(tmp_path: Path, text: str, expect: str) -> None:
    with pytest.raises(TraceError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        read_trace(write(tmp_path, text), max_requests=10)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://example.com:8000", "https://127.0.0.1:8000", "http://127.0.0.1:99999", "ftp://127.0.0.1"])
def test_only_loopback_urls_are_accepted(url: str) -> None:
    with pytest.raises(MCSchedError, match="loopback only") as exc:
        check_loopback(url)
    assert exc.value.exit_code == 2  # a usage error (docs/cli.md), not a failed check
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_loopback("http://localhost:8000") == "http://localhost:8000"


async def fake_endpoint(request: web.Request) -> web.StreamResponse:
    """Streams max_tokens chunks like the gateway, with its headers; model 'down' answers 503."""
    body = await request.json()
    if body["model"] == "down":
        return web.json_response({"error": {"message": "no", "type": "server_error", "param": None, "code": None}}, status=503)
    resp = web.StreamResponse(headers={"x-mcsched-cloud": "azure", "x-mcsched-replica": f"m-r{body['max_tokens'] % 2 + 1}"})
    await resp.prepare(request)
    for _ in range(body["max_tokens"]):
        await asyncio.sleep(0.01)
        await resp.write(b'data: {"choices":[{"text":"x"}]}\n\n')
    usage = {"prompt_tokens": 1, "completion_tokens": body["max_tokens"], "total_tokens": 1 + body["max_tokens"]}
    await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
    return resp


def run_against_fake(tmp_path: Path, model: str, duration: float) -> Report:
    async def main() -> Report:
        app = web.Application()
        app.router.add_post("/v1/completions", fake_endpoint)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            base = f"http://127.0.0.1:{port}"
            report = Report(base, model, "t", 2.0, duration, 2)
            return await replay(base, model, read_trace(write(tmp_path, TRACE), 100), speedup=2.0, duration=duration, max_concurrency=2, report=report)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def test_replay_paces_arrivals_and_measures_ttft_latency_and_replicas(tmp_path: Path) -> None:
    report = run_against_fake(tmp_path, "m", duration=5.0)  # the row at +60 s (30 s at 2x) is outside the run
    s = report.summary()
    assert s["requests"] == s["ok"] == 3 and s["errors"] == {}
    assert 0.5 <= s["wallSeconds"] < 5  # the third request is sent at 1.0 s / 2 = 0.5 s
    assert 0 < s["ttftSeconds"]["p50"] <= s["latencySeconds"]["p50"] <= s["latencySeconds"]["p99"]
    assert s["replicasByCloud"] == {"azure": ["m-r1", "m-r2"]} and s["requestsByCloud"] == {"azure": 3}
    assert s["throughput"]["outputTokensPerSecond"] > 0 and sum(o.tokens for o in report.outcomes) == 9


def test_errors_are_counted_by_status(tmp_path: Path) -> None:
    s = run_against_fake(tmp_path, "down", duration=5.0).summary()
    assert s["ok"] == 0 and s["errors"] == {"503": 3} and s["ttftSeconds"] == {"p50": None, "p99": None}
