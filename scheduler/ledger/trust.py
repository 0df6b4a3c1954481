"""The auditor's trust file: what a verifier believes before it opens the ledger under test.

A TOML file (read with ``tomllib``, checked with pydantic) that pins the log's identity
and the documents in force; ``audit verify --trust`` takes none of these from the ledger::

    log = "mcsched.example/ledger+1a2b3c4d+AXs..."      # C2SP verifier key: origin + Ed25519 key
    witnesses = ["azure.example/witness+5e6f7a8b+BJ..."] # cosignature/v1 verifier keys
    quorum = 1                                           # cosignatures required on the last checkpoint

    [[contract]]                                         # a contract in force (SHA-256 of its recorded JSON)
    sha256 = "9f86d08..."
    from = 0.0                                           # optional validity range, in the records' `at`
    until = 1.0e12

    [[catalog]]
    sha256 = "..."

No ``contract`` (or ``catalog``) table means "not pinned" and is reported as such. A bad
trust file is a usage error (exit 2), one line naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scheduler.errors import LedgerError
from scheduler.ledger import note

MAX_TRUST = 1 << 20


class TrustError(LedgerError):
    """A trust file that cannot be used: bad usage, not bad evidence."""

    exit_code = 2


def doc_hash(doc: Any) -> str:
    """SHA-256 of a recorded document (a contract or catalog as the ``configured`` record holds it)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


class _Pin(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    sha256: str
    start: float = Field(default=-math.inf, alias="from")
    end: float = Field(default=math.inf, alias="until")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be 64 lower-case hex digits")
        return v


class _TrustDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log: str
    witnesses: list[str] = []
    quorum: int = Field(default=0, ge=0)
    contract: list[_Pin] | None = None
    catalog: list[_Pin] | None = None


@dataclass(frozen=True)
class Pin:
    sha256: str
    start: float
    end: float


@dataclass(frozen=True)
class Trust:
    log: note.Verifier  # its name is the pinned origin
    witnesses: tuple[note.Verifier, ...] = ()
    quorum: int = 0
    contracts: tuple[Pin, ...] | None = None
    catalogs: tuple[Pin, ...] | None = None
    source: str = ""

    @property
    def origin(self) -> str:
        return self.log.name

    def pinned(self, kind: str, doc: Any, at: float) -> str | None:
        """None if ``doc`` (a contract or catalog) is pinned for time ``at``, else why not."""
        pins = self.contracts if kind == "contract" else self.catalogs
        if pins is None:
            return None
        digest = doc_hash(doc)
        ranges = [p for p in pins if p.sha256 == digest]
        if not ranges:
            return f"{kind} sha256 {digest[:16]} is not in the trust file {self.source}"
        if not any(p.start <= at < p.end for p in ranges):
            return f"{kind} sha256 {digest[:16]} is pinned, but not for time {at}"
        return None


def parse_witnesses(keys: list[str], quorum: int, where: str) -> tuple[note.Verifier, ...]:
    """The witnesses' verifier keys, refused as a trust file refuses them (``audit trust`` checks
    what it prints with this too): cosignature/v1 keys, each once, at least ``quorum`` of them."""
    try:
        witnesses = tuple(note.parse_vkey(w) for w in keys)
    except note.NoteError as exc:
        raise TrustError(f"{where}: {exc}") from None
    if any(w.alg != note.ALG_COSIGNATURE_V1 for w in witnesses):
        raise TrustError(f"{where}: witnesses: each must be a cosignature/v1 key (type 0x04)")
    if len({w.vkey() for w in witnesses}) != len(witnesses):
        raise TrustError(f"{where}: witnesses: a witness is listed twice")
    if not 0 <= quorum <= len(witnesses):
        raise TrustError(f"{where}: quorum: {quorum} cosignatures required, {len(witnesses)} witnesses listed")
    return witnesses


def load_trust(path: Path) -> Trust:
    try:
        if path.stat().st_size > MAX_TRUST:
            raise TrustError(f"{path}: too large for a trust file")
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrustError(f"{path}: no such trust file") from None
    except OSError as exc:
        raise TrustError(f"{path}: cannot read the trust file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TrustError(f"{path}: not a TOML trust file ({exc})") from None
    try:
        parsed = _TrustDoc.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise TrustError(f"{path}: {where}: {first['msg']}") from None
    try:
        log = note.parse_vkey(parsed.log)
    except note.NoteError as exc:
        raise TrustError(f"{path}: {exc}") from None
    if log.alg != note.ALG_ED25519:
        raise TrustError(f"{path}: log: not an Ed25519 note key (type 0x01)")
    witnesses = parse_witnesses(parsed.witnesses, parsed.quorum, str(path))

    def pins(items: list[_Pin] | None) -> tuple[Pin, ...] | None:
        return None if items is None else tuple(Pin(p.sha256, p.start, p.end) for p in items)

    return Trust(log, witnesses, parsed.quorum, pins(parsed.contract), pins(parsed.catalog), str(path))
