"""The OpenAI-style HTTP protocol and the mock model, without Ray or a web framework.

The gateway parses and checks every request here before any replica sees it, so a bad
request costs one 4xx answer and nothing else: the body is capped, the JSON must parse,
fields must have the right types (no silent coercion of ``"10"`` into ``10``) and
``max_tokens`` must be sane. The schema is strict as OpenAI's own API is: an unknown field
is refused with 400 (``Unrecognized request argument supplied: x``), naming it, so a typo
never silently changes what is generated. The JSON parser (pydantic-core's) bounds the
nesting depth, so a body nested thousands deep is a 400, not a ``RecursionError``.

The mock model is deterministic: the same model and prompt always produce the same text.
It streams one token every ``1 / tokensPerSecond`` seconds after a prefill of
``prompt_tokens / (PREFILL_FACTOR x tokensPerSecond)`` seconds, so time to first token
grows with the prompt like on a real GPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a prompt of ~250k tokens, far beyond the mock's context
MAX_TOKENS_LIMIT = 32_768
MAX_CONTEXT_TOKENS = 131_072
DEFAULT_MAX_TOKENS = 16
PREFILL_FACTOR = 40.0  # prefill runs this many times faster than decoding
CHUNK_SECONDS = 0.1  # tokens due within this interval go out in one SSE chunk (fewer hops per token)
DONE = "data: [DONE]\n\n"

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORDS = (
    "the of and to in a is that for it as was with be by on not this are or from at which but have an they you were "
    "one all we their there been has more when will would who so no if out up what about into than them can only other "
    "new some could time these two may then first any like now my such make over our even most me state after also made "
    "many did must before back see through way where get much go well your know should down work year because come people"
)
VOCAB = tuple(_WORDS.split(" "))


class ApiError(Exception):
    """An OpenAI-style error answer: status, message and the offending parameter."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or {}
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --------------------------------------------------------------------------- requests


class _Strict(BaseModel):
    """Right types required (strict) and no field the schema does not name (as OpenAI's API)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class TextPart(_Strict):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=MAX_BODY_BYTES)]


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class _Common(_Strict):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    # Accepted so that OpenAI clients' common options work; the mock model does not use them.
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None


class ChatRequest(_Common):
    messages: Annotated[list[Message], Field(min_length=1, max_length=10_000)]
    max_completion_tokens: int | None = None


class CompletionRequest(_Common):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]


Kind = Literal["chat", "completion"]


@dataclass(frozen=True)
class Request:
    """A checked request, as the gateway hands it to a replica (plain data: cheap to ship)."""

    kind: Kind
    model: str
    prompt: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    id: str
    created: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return cls(**d)


def count_tokens(text: str) -> int:
    """Words and punctuation marks: a stand-in tokenizer that is the same on both ends."""
    return len(_TOKEN.findall(text))


def _message_text(m: Message) -> str:
    if m.content is None:
        return ""
    if isinstance(m.content, str):
        return m.content
    return "".join(p.text for p in m.content)


_UNION_TAGS = re.compile(r"^(str|int|float|bool|none|list|dict)$|[\[(]")


def _param(loc: tuple[int | str, ...]) -> str:
    """``messages.0.content``: the field path, without pydantic's union-branch tags (``str``, ``list[str]``)."""
    return ".".join(str(x) for x in loc if isinstance(x, int) or not _UNION_TAGS.search(x)) or "body"


#: pydantic's complaints about a value of the right type out of its range or set: ``invalid_value``
#: (docs/serving.md); any other complaint about a field is ``invalid_type``.
_VALUE_KINDS = frozenset({"finite_number", "greater_than", "greater_than_equal", "less_than", "less_than_equal",
                          "too_short", "too_long", "string_too_long", "string_too_short", "literal_error", "enum"})
_JSON_TYPES = {"NoneType": "null", "list": "an array", "str": "a string", "int": "a number", "float": "a number", "bool": "a boolean"}


def _api_error(exc: ValidationError) -> ApiError:
    """pydantic's first complaint as OpenAI words it (its codes: invalid_json, unknown_parameter, ...)."""
    first = exc.errors(include_url=False)[0]
    kind, loc = first["type"], tuple(first["loc"])
    if kind == "json_invalid":  # also a body nested deeper than the parser's recursion limit
        reason = str(first.get("ctx", {}).get("error", first["msg"]))
        return ApiError(400, f"the body is not valid JSON: {reason}", code="invalid_json")
    if kind == "model_type" and not loc:
        got = type(first["input"]).__name__
        return ApiError(400, f"the body must be a JSON object, got {_JSON_TYPES.get(got, got)}", code="invalid_json")
    param = _param(loc)
    if kind == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {param}", param=param, code="unknown_parameter")
    if kind == "missing":
        return ApiError(400, f"{param}: required field is missing", param=param, code="missing_field")
    return ApiError(400, f"{param}: {first['msg']}", param=param, code="invalid_value" if kind in _VALUE_KINDS else "invalid_type")


def parse_request(kind: Kind, body: bytes) -> Request:
    """Bytes off the wire -> a checked ``Request``, or ``ApiError`` (always 4xx)."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}", code="request_too_large")
    model_cls: type[_Common] = ChatRequest if kind == "chat" else CompletionRequest
    if b"NaN" in body or b"Infinity" in body:  # pydantic's parser takes these; JSON (RFC 8259) has no such literals
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        except RecursionError:  # nested too deep to read: pydantic's parser says so below, as for any body
            pass
    try:
        parsed = model_cls.model_validate_json(body)
    except ValidationError as exc:
        raise _api_error(exc) from None
    max_tokens = parsed.max_tokens
    if isinstance(parsed, ChatRequest) and parsed.max_completion_tokens is not None:
        max_tokens = parsed.max_completion_tokens
    param = "max_completion_tokens" if isinstance(parsed, ChatRequest) and parsed.max_completion_tokens is not None else "max_tokens"
    if max_tokens is not None and max_tokens < 1:
        raise ApiError(400, f"{param} must be at least 1, got {max_tokens}", param=param, code="invalid_value")
    if max_tokens is not None and max_tokens > MAX_TOKENS_LIMIT:
        raise ApiError(400, f"{param} is {max_tokens}; this model generates at most {MAX_TOKENS_LIMIT} tokens", param=param, code="invalid_value")
    if parsed.n not in (None, 1):
        raise ApiError(400, f"n must be 1 (one choice per request), got {parsed.n}", param="n", code="invalid_value")
    if isinstance(parsed, ChatRequest):
        prompt = "\n".join(f"{m.role}: {_message_text(m)}" for m in parsed.messages)
    else:
        assert isinstance(parsed, CompletionRequest)
        prompt = parsed.prompt if isinstance(parsed.prompt, str) else parsed.prompt[0]
    prompt_tokens = count_tokens(prompt)
    if prompt_tokens + (max_tokens or DEFAULT_MAX_TOKENS) > MAX_CONTEXT_TOKENS:
        raise ApiError(
            400, f"{prompt_tokens} prompt tokens + {max_tokens} to generate exceed the context of {MAX_CONTEXT_TOKENS}",
            param="messages" if kind == "chat" else "prompt", code="context_length_exceeded",
        )
    return Request(
        kind=kind,
        model=parsed.model,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        stream=parsed.stream,
        include_usage=bool(parsed.stream_options and parsed.stream_options.include_usage),
        id=("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24],
        created=int(time.time()),
    )


# --------------------------------------------------------------------------- the mock model


def _seed(model: str, prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{model}\n{prompt}".encode()).digest()[:8], "big") or 1


def natural_length(model: str, prompt: str) -> int:
    """How many tokens the mock model says when nobody sets ``max_tokens`` (8-64)."""
    return 8 + _seed(model, prompt) % 57


def tokens(model: str, prompt: str, n: int) -> list[str]:
    """The deterministic completion: ``n`` words drawn by xorshift64 from a seed of model and prompt."""
    x = _seed(model, prompt)
    out = []
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        word = VOCAB[x % len(VOCAB)]
        out.append(word if i == 0 else " " + word)
    return out


def planned_tokens(req: Request) -> list[str]:
    n = natural_length(req.model, req.prompt) if req.max_tokens is None else req.max_tokens
    return tokens(req.model, req.prompt, n)


def finish_reason(req: Request) -> str:
    """``length`` when ``max_tokens`` cut the answer (the mock ignores end-of-text then), else ``stop``."""
    return "stop" if req.max_tokens is None else "length"


async def generate(
    req: Request,
    tokens_per_second: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> AsyncIterator[list[str]]:
    """Yield the planned tokens in chunks, on the mock model's clock (absolute deadlines,
    so scheduling jitter does not accumulate over a long answer)."""
    words = planned_tokens(req)
    start = clock()
    first_at = start + req.prompt_tokens / (PREFILL_FACTOR * tokens_per_second) + 1.0 / tokens_per_second
    sent = 0
    while sent < len(words):
        now = clock()
        due = 0 if now < first_at else min(len(words), math.floor((now - first_at) * tokens_per_second + 1e-6) + 1)
        if due <= sent:
            await sleep(max(first_at + sent / tokens_per_second - now, 0.001))
            continue
        yield words[sent:due]
        sent = due
        if sent < len(words):
            await sleep(CHUNK_SECONDS)


# --------------------------------------------------------------------------- responses


def usage(req: Request, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": req.prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": req.prompt_tokens + completion_tokens}


def response_body(req: Request, text: str, completion_tokens: int, finish_reason: str) -> dict[str, Any]:
    """A whole (non-streaming) answer."""
    if req.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {"id": req.id, "object": obj, "created": req.created, "model": req.model, "choices": [choice], "usage": usage(req, completion_tokens)}


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def chunk(req: Request, text: str | None, finish_reason: str | None = None, *, first: bool = False) -> str:
    """One streamed piece (``text`` None: the closing chunk carrying the finish reason)."""
    if req.kind == "chat":
        delta: dict[str, Any] = {} if text is None else ({"role": "assistant", "content": text} if first else {"content": text})
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return sse({"id": req.id, "object": obj, "created": req.created, "model": req.model, "choices": [choice]})


def usage_chunk(req: Request, completion_tokens: int) -> str:
    """The final chunk OpenAI sends when ``stream_options.include_usage`` is set."""
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return sse({"id": req.id, "object": obj, "created": req.created, "model": req.model, "choices": [], "usage": usage(req, completion_tokens)})


def models_body(models: list[tuple[str, str]], created: int) -> dict[str, Any]:
    """``GET /v1/models``: (model, owning job) pairs."""
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": f"mcsched/{job}"} for m, job in models]}
