"""The OpenAI protocol and the mock model, without Ray: what is refused, what is answered."""

from __future__ import annotations

import asyncio
import json

import pytest

from scheduler.runtime.serve.openai import (
    DONE,
    MAX_BODY_BYTES,
    MAX_TOKENS_LIMIT,
    PREFILL_FACTOR,
    ApiError,
    Request,
    chunk,
    count_tokens,
    generate,
    parse_request,
    response_body,
    tokens,
    usage_chunk,
)


def chat(**body: object) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "Hello there, world!"}], **body}).encode()


@pytest.mark.parametrize(
    ("kind", "body", "status", "param"),
    [
        ("chat", b"{bad json", 400, None),
        ("chat", b"[1, 2]", 400, None),
        ("chat", b"\xff\xfe", 400, None),
        ("chat", chat(max_tokens=-5), 400, "max_tokens"),
        ("chat", chat(max_tokens=0), 400, "max_tokens"),
        ("chat", chat(max_tokens=MAX_TOKENS_LIMIT + 1), 400, "max_tokens"),
        ("chat", chat(max_completion_tokens=10**9), 400, "max_completion_tokens"),
        ("chat", chat(max_tokens="10"), 400, "max_tokens"),  # strict: no silent coercion
        ("chat", chat(max_tokens=True), 400, "max_tokens"),
        ("chat", chat(stream="yes"), 400, "stream"),
        ("chat", chat(n=3), 400, "n"),
        ("chat", chat(temperature=7), 400, "temperature"),
        ("chat", json.dumps({"model": "m", "messages": "hi"}).encode(), 400, "messages"),
        ("chat", json.dumps({"model": "m", "messages": []}).encode(), 400, "messages"),
        ("chat", json.dumps({"model": "m", "messages": [{"role": "robot", "content": "x"}]}).encode(), 400, "messages.0.role"),
        ("chat", json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
        ("completion", json.dumps({"model": "m"}).encode(), 400, "prompt"),
        ("completion", json.dumps({"model": "m", "prompt": ["a", "b"]}).encode(), 400, "prompt"),
        ("completion", b"x" * (MAX_BODY_BYTES + 1), 413, None),
        # strict, as OpenAI's API: an unknown field or a typo is refused and named
        ("chat", chat(max_tokenz=5), 400, "max_tokenz"),
        ("chat", json.dumps({"model": "m", "messages": [{"role": "user", "content": "x", "colour": 1}]}).encode(), 400, "messages.0.colour"),
        ("chat", chat(stream_options={"include_usage": True, "extra": 1}), 400, "stream_options.extra"),
        ("chat", chat(stop=[1, 2]), 400, "stop"),
        ("chat", chat(user="u" * 257), 400, "user"),
        # depth: nested ~1,000 and ~100,000 deep, inside a known field and an unknown one
        ("chat", b'{"model":"m","messages":' + b"[" * 1000 + b"]" * 1000 + b"}", 400, None),
        ("chat", b'{"model":"m","x":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}", 400, None),
        ("completion", b"[" * 5000 + b"]" * 5000, 400, None),
    ],
)
def test_bad_requests_are_4xx_with_an_openai_error_body(kind: str, body: bytes, status: int, param: str | None) -> None:
    with pytest.raises(ApiError) as exc:
        parse_request(kind, body)  # type: ignore[arg-type]
    assert exc.value.status == status and exc.value.param == param
    err = exc.value.body()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error" and err["message"]


def test_a_deeply_nested_body_is_an_openai_400_not_a_recursion_error() -> None:
    with pytest.raises(ApiError) as exc:
        parse_request("chat", b'{"model":"m","messages":[{"role":"user","content":' + b"[" * 1000 + b"]" * 1000 + b"}]}")
    assert exc.value.status == 400 and exc.value.code == "invalid_json" and "recursion" in exc.value.message


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        # NaN and Infinity are no JSON literals (pydantic's parser takes them, and said "temperature: <= 2")
        (chat(max_tokens=5)[:-1] + b', "temperature": NaN}', "invalid_json", "the body is not valid JSON: JSON is malformed: invalid character"),
        (chat(max_tokens=5)[:-1] + b', "top_p": -Infinity}', "invalid_json", "the body is not valid JSON: JSON is malformed: invalid character"),
        (b"null", "invalid_json", "the body must be a JSON object, got null"),  # said "got NoneType"
        (b"[1]", "invalid_json", "the body must be a JSON object, got an array"),
        # a value of the right type out of its range or set is invalid_value (docs/serving.md), not invalid_type
        (chat(max_tokens=5)[:-1] + b', "temperature": 1e400}', "invalid_value", "temperature: Input should be a finite number"),
        (chat(temperature=7), "invalid_value", "temperature: Input should be less than or equal to 2"),
        (json.dumps({"model": "m", "messages": []}).encode(), "invalid_value", "messages: List should have at least 1 item"),
        (json.dumps({"model": "m", "messages": [{"role": "robot", "content": "x"}]}).encode(), "invalid_value", "messages.0.role: "),
        (chat(stream="yes"), "invalid_type", "stream: Input should be a valid boolean"),
    ],
)
def test_each_bad_body_gets_the_code_openai_clients_branch_on(body: bytes, code: str, message: str) -> None:
    with pytest.raises(ApiError) as exc:
        parse_request("chat", body)
    assert exc.value.status == 400 and exc.value.code == code and exc.value.message.startswith(message), (exc.value.code, exc.value.message)


def test_nan_inside_a_string_is_text_not_a_number() -> None:
    assert parse_request("chat", json.dumps({"model": "m", "messages": [{"role": "user", "content": "NaN Infinity"}]}).encode()).model == "m"


def test_an_unknown_field_is_named_as_openai_names_it() -> None:
    with pytest.raises(ApiError) as exc:
        parse_request("chat", chat(max_tokenz=5))
    assert exc.value.message == "Unrecognized request argument supplied: max_tokenz" and exc.value.code == "unknown_parameter"


def test_good_requests_parse_with_the_options_openai_clients_send() -> None:
    req = parse_request("chat", chat(max_tokens=7, stream=True, stream_options={"include_usage": True}, frequency_penalty=0.5,
                                     presence_penalty=0, temperature=1, top_p=1, seed=3, user="me"))
    assert (req.kind, req.model, req.max_tokens, req.stream, req.include_usage) == ("chat", "m", 7, True, True)
    assert req.prompt == "user: Hello there, world!" and req.prompt_tokens == count_tokens(req.prompt) == 7
    parts = json.dumps({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a b"}]}]}).encode()
    assert parse_request("chat", parts).prompt == "user: a b"
    comp = parse_request("completion", json.dumps({"model": "m", "prompt": ["one two"], "max_tokens": 3}).encode())
    assert (comp.kind, comp.prompt, comp.prompt_tokens, comp.id[:5]) == ("completion", "one two", 2, "cmpl-")
    assert Request.from_dict(comp.to_dict()) == comp


def test_the_mock_model_is_deterministic_and_honours_max_tokens() -> None:
    a, b = tokens("m", "prompt", 50), tokens("m", "prompt", 50)
    assert a == b and len(a) == 50 and tokens("m", "other", 50) != a and tokens("m2", "prompt", 50) != a
    req = parse_request("completion", json.dumps({"model": "m", "prompt": "p", "max_tokens": 5}).encode())
    body = response_body(req, "".join(tokens("m", "p", 5)), 5, "length")
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}
    assert body["object"] == "text_completion" and body["choices"][0]["finish_reason"] == "length"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_tokens_stream_at_the_configured_speed_after_a_prefill() -> None:
    clock = FakeClock()
    prompt = " ".join(["w"] * 400)
    req = parse_request("completion", json.dumps({"model": "m", "prompt": prompt, "max_tokens": 20}).encode())

    async def run() -> list[tuple[float, list[str]]]:
        return [(clock.now, piece) async for piece in generate(req, 10.0, clock=clock, sleep=clock.sleep)]

    got = asyncio.run(run())
    first_at = 100.0 + 400 / (PREFILL_FACTOR * 10.0) + 0.1
    assert got[0][0] == pytest.approx(first_at)  # time to first token grows with the prompt
    assert sum(len(p) for _, p in got) == 20 and [w for _, p in got for w in p] == tokens("m", prompt, 20)
    assert got[-1][0] == pytest.approx(first_at + 19 / 10.0, abs=0.03)  # one token per 1/tokensPerSecond


def test_stream_chunks_are_openai_sse() -> None:
    req = parse_request("chat", chat(max_tokens=2, stream=True))
    first, closing, use = chunk(req, "Hi", first=True), chunk(req, None, "length"), usage_chunk(req, 2)
    for line in (first, closing, use):
        assert line.startswith("data: ") and line.endswith("\n\n")
    assert json.loads(first[6:])["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}
    assert json.loads(closing[6:])["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert json.loads(use[6:])["usage"]["completion_tokens"] == 2 and DONE == "data: [DONE]\n\n"
