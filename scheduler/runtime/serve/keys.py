"""API keys for the served endpoint: the key file, and the gateway's check of each request.

Why this shape:

- **Hashes only, in a 0600 file beside the ledger.** ``mcsched api-keys add NAME`` prints a
  new key once; the file (``api-keys.json`` in the state dir) keeps its SHA-256, its name and
  its rate. A key is 32 random bytes, so a plain SHA-256 is enough (no password stretching:
  nothing to guess), and a stolen file serves no request.
- **The scheduler actor hands the table out.** It runs beside the ledger (so it reads the
  same state dir, locally and in a pod with the ledger's volume); the gateway pulls the
  table every few seconds, so ``revoke`` takes effect within ``KEY_REFRESH_SECONDS``.
- **Fail closed.** No key file, an empty one, or a gateway that could not read the table
  yet: every request is refused (401, or 503 until the table arrives), never let through.
- **Rate per key, approximately across replicas.** Each gateway replica runs a token bucket
  per key at ``rate / replicas`` requests per second (burst: one second's worth), so the
  sum over replicas is the key's rate with no shared state on the hot path.

Pure except for ``KeyStore`` (file I/O); ``Guard`` takes an injected clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from scheduler.errors import ApiKeyError
from scheduler.runtime.serve.openai import ApiError

KEY_FILE = "api-keys.json"
KEY_PREFIX = "mcs-"
DEFAULT_RATE = 20.0  # requests per second per key
MAX_RATE = 100_000.0
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # a DNS label: safe as a metrics label value
_NAME = re.compile(NAME_PATTERN)


class KeyRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One key as stored: never the key itself."""

    name: str
    sha256: str
    created: float
    rate: float = DEFAULT_RATE


class KeyFile(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[KeyRecord] = []


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ApiKeyError(f"api key name {name!r}: use 1-63 lowercase letters, digits and '-' (a DNS label)")
    return name


class KeyStore:
    """The key file: read, add (returns the new key, the only time it is seen), revoke."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_dir(cls, state_dir: Path | str) -> KeyStore:
        return cls(Path(state_dir) / KEY_FILE)

    def load(self) -> list[KeyRecord]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ApiKeyError(f"{self.path}: cannot read: {exc.strerror}") from None
        try:
            return msgspec.json.decode(raw, type=KeyFile).keys
        except msgspec.ValidationError as exc:
            raise ApiKeyError(f"{self.path}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ApiKeyError(f"{self.path}: not a key file: {exc}") from None

    def add(self, name: str, rate: float = DEFAULT_RATE) -> str:
        check_name(name)
        keys = self.load()
        if any(k.name == name for k in keys):
            raise ApiKeyError(f"an api key named {name!r} exists already (revoke it first: `mcsched api-keys revoke {name}`)")
        if not 0 < rate <= MAX_RATE:
            raise ApiKeyError(f"--rate {rate:g}: must be > 0 and <= {MAX_RATE:g} requests per second")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        self._write([*keys, KeyRecord(name, digest(key), round(time.time(), 3), rate)])
        return key

    def revoke(self, name: str) -> None:
        keys = self.load()
        kept = [k for k in keys if k.name != name]
        if len(kept) == len(keys):
            raise ApiKeyError(f"no api key named {name!r} (see `mcsched api-keys list`)")
        self._write(kept)

    def table(self) -> dict[str, tuple[str, float]]:
        """What the gateway needs: hash -> (name, rate)."""
        return {k.sha256: (k.name, k.rate) for k in self.load()}

    def _write(self, keys: list[KeyRecord]) -> None:
        """Atomically, created 0600 (never readable by others, not even for an instant)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".api-keys-", dir=self.path.parent)  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.format(msgspec.json.encode(KeyFile(keys)), indent=2) + b"\n")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at = tokens, at


@dataclass(frozen=True)
class Caller:
    name: str


class Guard:
    """Authenticates a request's ``Authorization: Bearer KEY`` and applies its key's rate.

    ``share`` is this gateway replica's part of each key's rate (1 / gateway replicas).
    """

    def __init__(self, share: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self.clock = clock
        self.keys: dict[str, tuple[str, float]] | None = None  # None: not loaded yet (refuse all)
        self._buckets: dict[str, _Bucket] = {}
        self._rates: dict[str, float] = {}

    def update(self, table: dict[str, tuple[str, float]]) -> None:
        self.keys = dict(table)
        self._rates = {name: rate for name, rate in self.keys.values()}
        self._buckets = {n: b for n, b in self._buckets.items() if n in self._rates}

    def check(self, authorization: str | None) -> Caller:
        """The caller, or ``ApiError`` 401 (no / wrong key), 429 (over its rate), 503 (no table yet)."""
        caller = self.authenticate(authorization)
        self.admit(caller)
        return caller

    def authenticate(self, authorization: str | None) -> Caller:
        """Whose key this is, or ``ApiError`` 401 (no / wrong key) or 503 (no table yet)."""
        if self.keys is None:
            raise ApiError(503, "the gateway has not loaded its API keys yet; retry shortly", code="keys_unavailable", type_="server_error")
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                "Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with `mcsched api-keys add NAME`.",
                code="missing_api_key",
            )
        found = self.keys.get(digest(key))  # a lookup by hash: timing tells only about hashes of guesses
        if found is None:
            shown = key[:6] + "*" * 4 + key[-4:] if len(key) > 12 else "****"
            raise ApiError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
        return Caller(found[0])

    def admit(self, caller: Caller) -> None:
        """Take one token from the caller's bucket, or ``ApiError`` 429 with ``retry-after``."""
        rate = self._rates.get(caller.name, 0.0) * self.share
        if rate <= 0:
            raise ApiError(401, f"the API key {caller.name!r} was revoked", code="invalid_api_key")
        self._take(caller.name, rate)

    def _take(self, name: str, rate: float) -> None:
        now = self.clock()
        burst = max(rate, 1.0)
        b = self._buckets.get(name)
        if b is None:
            b = self._buckets[name] = _Bucket(burst, now)
        b.tokens = min(burst, b.tokens + (now - b.at) * rate)
        b.at = now
        if b.tokens < 1.0:
            wait = (1.0 - b.tokens) / rate
            raise ApiError(
                429,
                f"Rate limit reached for key {name!r}: {rate:g} requests per second on this gateway replica. Retry in {wait:.2f}s.",
                code="rate_limit_exceeded",
                type_="requests",
                headers={"retry-after": str(max(1, int(wait + 0.999)))},
            )
        b.tokens -= 1.0
