"""A witness: an independent party that cosigns a log's checkpoints, only forward.

The holder runs it (``mcsched witness run``) with its own key and its own state file, on
loopback HTTP by default. It speaks C2SP tlog-witness's ``add-checkpoint``: the request
is ``old <size>``, the consistency proof lines (base64), a blank line and the signed
checkpoint; the witness checks the log's signature (the logs it witnesses are pinned by
verifier key), that ``old`` is the size it last cosigned (409 with its size otherwise),
and the RFC 9162 consistency proof from that checkpoint to the new one (422 otherwise),
then records the new size and root (``state``, 0600, replaced atomically) and answers a
timestamped cosignature/v1 line. A rollback (a smaller size), a fork (same size, another
root) or a rewritten history (no consistency proof) is refused, so a log cannot show two
versions of its history to parties who check cosignatures.

``submit`` is the log side: it sends the latest checkpoint with a proof from the
witness's size (retrying once on 409) and stores the cosignature line in the ledger.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import InitVar, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.errors import LedgerError, LedgerInputError
from scheduler.ledger import note
from scheduler.ledger.merkle import EMPTY_ROOT, MerkleTree, leaf_hash, verify_consistency
from scheduler.ledger.signing import CheckpointFormatError, load_or_create_key, parse_checkpoint, write_private

MAX_REQUEST = 1 << 16
CONTENT_TYPE = "text/x.tlog.size"


class WitnessRefusal(Exception):
    def __init__(self, status: int, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.size = status, message, size


def read_state(path: Path) -> dict[str, dict[str, object]]:
    """The witness's state file (origin -> the size and root it last cosigned); {} before the first."""
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        for origin, st in doc.items():
            if not isinstance(st, dict) or type(st.get("size")) is not int or not isinstance(st.get("root"), str):
                raise ValueError(f"bad entry for {origin}")
        return doc
    except (OSError, ValueError, RecursionError) as exc:
        raise LedgerInputError(f"{path}: unreadable witness state ({exc})") from None


@dataclass
class Witness:
    """The cosigner: its key, its name, the logs it follows (origin -> verifier) and its state file."""

    name: str
    key: Ed25519PrivateKey
    logs: dict[str, note.Verifier]
    state_path: Path
    clock: Callable[[], float] = time.time
    read: InitVar[dict[str, dict[str, object]] | None] = None  # ``state_path`` as the caller read it already

    def __post_init__(self, read: dict[str, dict[str, object]] | None) -> None:
        self._lock = threading.Lock()
        self.state = read if read is not None else read_state(self.state_path)

    @property
    def verifier(self) -> note.Verifier:
        return note.verifier(self.name, self.key.public_key(), note.ALG_COSIGNATURE_V1)

    def _write_state(self) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        write_private(tmp, json.dumps(self.state, sort_keys=True).encode(), "witness state")
        os.replace(tmp, self.state_path)

    def add_checkpoint(self, body: bytes) -> bytes:
        """One add-checkpoint request; the cosignature line, or ``WitnessRefusal``."""
        old, proof, signed = _parse_request(body)
        try:
            cp = parse_checkpoint(signed)
        except CheckpointFormatError as exc:
            raise WitnessRefusal(HTTPStatus.BAD_REQUEST, f"unreadable checkpoint ({exc})") from None
        log = self.logs.get(cp.origin)
        if log is None:
            raise WitnessRefusal(HTTPStatus.NOT_FOUND, f"unknown log {cp.origin!r}")
        if not cp.verified_by(log):
            raise WitnessRefusal(HTTPStatus.FORBIDDEN, "checkpoint is not signed by the log's key")
        with self._lock:
            st = self.state.get(cp.origin, {"size": 0, "root": base64.b64encode(EMPTY_ROOT).decode()})
            size, root = int(st["size"]), base64.b64decode(str(st["root"]))  # type: ignore[call-overload]
            if old != size:
                raise WitnessRefusal(HTTPStatus.CONFLICT, f"the witness's last size is {size}", size)
            if cp.size < size:
                raise WitnessRefusal(HTTPStatus.BAD_REQUEST, f"rollback: size {cp.size} is below the cosigned {size}")
            consistent = not proof if size == 0 else verify_consistency(size, cp.size, root, cp.root, proof)
            if not consistent:
                raise WitnessRefusal(HTTPStatus.UNPROCESSABLE_ENTITY, f"checkpoint of size {cp.size} is not consistent with the cosigned one of size {size} (a fork)")
            self.state[cp.origin] = {"size": cp.size, "root": base64.b64encode(cp.root).decode()}
            self._write_state()
            return note.cosign(cp.text(), self.name, self.key, int(self.clock())).line()


def _parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    if len(body) > MAX_REQUEST:
        raise WitnessRefusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
    head, sep, signed = body.partition(b"\n\n")
    lines = head.split(b"\n")
    if not sep or not lines[0].startswith(b"old ") or not lines[0][4:].isdigit():
        raise WitnessRefusal(HTTPStatus.BAD_REQUEST, "request is not 'old N', proof lines, a blank line and a checkpoint")
    try:
        proof = [base64.b64decode(x, validate=True) for x in lines[1:]]
    except binascii.Error:
        raise WitnessRefusal(HTTPStatus.BAD_REQUEST, "proof line is not base64") from None
    if any(len(h) != 32 for h in proof) or len(proof) > 63:
        raise WitnessRefusal(HTTPStatus.BAD_REQUEST, "proof lines must be 32-byte hashes")
    return int(lines[0][4:]), proof, signed


def open_witness(name: str, key_path: Path, state_path: Path, logs: list[str]) -> Witness:
    """The witness with the key at ``key_path`` (created 0600 on first use) following the logs' verifier keys."""
    try:
        verifiers = [note.parse_vkey(v) for v in logs]
        note.check_name(name)
    except note.NoteError as exc:
        raise LedgerInputError(f"witness: {exc}") from None
    if not verifiers:
        raise LedgerInputError("witness: pass at least one --log verifier key to follow")
    state = read_state(state_path)  # before the key is made: a witness that cannot start leaves nothing behind
    return Witness(name, load_or_create_key(key_path), {v.name: v for v in verifiers}, state_path, read=state)


class _Handler(BaseHTTPRequestHandler):
    witness: Witness

    def do_POST(self) -> None:
        if self.path != "/add-checkpoint":
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        text = self.headers.get("Content-Length") or "0"
        if not text.isdigit():  # not a count of bytes (a sign, letters): nothing safe to read
            self._reply(HTTPStatus.BAD_REQUEST, b"Content-Length is not a number of bytes\n")
            return
        length = int(text)
        if length > MAX_REQUEST:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"request too large\n")
            return
        try:
            line = self.witness.add_checkpoint(self.rfile.read(length))
        except WitnessRefusal as r:
            body = f"{r.size}\n".encode() if r.size is not None else (r.message + "\n").encode()
            self._reply(r.status, body, CONTENT_TYPE if r.size is not None else "text/plain")
            return
        self._reply(HTTPStatus.OK, line)

    def do_GET(self) -> None:
        self._only_post()

    def do_PUT(self) -> None:
        self._only_post()

    def do_DELETE(self) -> None:
        self._only_post()

    def _only_post(self) -> None:
        if self.path == "/add-checkpoint":
            self._reply(HTTPStatus.METHOD_NOT_ALLOWED, b"POST a checkpoint to /add-checkpoint\n", extra={"Allow": "POST"})
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n")

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``witness`` (not started: call ``serve_forever``); ``port`` 0 picks a free one."""
    handler = type("WitnessHandler", (_Handler,), {"witness": witness})
    return ThreadingHTTPServer((host, port), handler)


# ---------------------------------------------------------------- the log's side


def _post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url.rstrip("/") + "/add-checkpoint", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read(MAX_REQUEST))
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read(MAX_REQUEST))
    except (urllib.error.URLError, OSError) as exc:
        raise LedgerError(f"witness {url}: unreachable ({getattr(exc, 'reason', exc)})") from None


Post = Callable[[str, bytes, float], tuple[int, bytes]]


def submit(
    db: Path,
    urls: list[str],
    timeout: float = 5.0,
    post: Post = _post,
    tree: MerkleTree | None = None,
    conn: sqlite3.Connection | None = None,
) -> list[str]:
    """Ask each witness to cosign the ledger's latest checkpoint; store the lines; one status line per witness.

    ``post(url, body, timeout) -> (status, reply)`` is the transport (HTTP; tests pass an
    in-process witness). ``tree``: leaf hashes kept from an earlier call (``Cosigner``),
    extended with the records since (read and hashed here only where the caller has not
    supplied them); its complete subtrees stay cached, so a proof costs O(log^2 n) hashes
    instead of rehashing the log. ``conn``: a connection to reuse (left open).
    """
    tree = tree if tree is not None else MerkleTree([])
    own = conn is None
    if conn is None:
        conn = sqlite3.connect(str(db), isolation_level=None, timeout=timeout)
        conn.text_factory = bytes
    try:
        row = conn.execute("SELECT id, note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            raise LedgerError(f"{db}: no checkpoint to cosign")
        cp_id, signed = int(row[0]), bytes(row[1])
        cp = parse_checkpoint(signed)
        if len(tree) < cp.size:
            new = conn.execute("SELECT leaf FROM records WHERE seq > ? AND seq <= ? ORDER BY seq", (len(tree), cp.size))
            tree.leaves.extend(leaf_hash(bytes(leaf)) for (leaf,) in new)
        if len(tree) < cp.size:
            raise LedgerError(f"{db}: the checkpoint of size {cp.size} covers records the ledger does not hold")
        out = []
        for url in urls:
            old = 0
            try:
                for _ in range(2):
                    proof = tree.consistency_proof(old, cp.size) if 0 < old < cp.size else []
                    body = b"old %d\n" % old + b"".join(base64.b64encode(h) + b"\n" for h in proof) + b"\n" + signed
                    status, reply = post(url, body, timeout)
                    if status == HTTPStatus.CONFLICT and reply.strip().isdigit():
                        old = int(reply.strip())
                        continue
                    break
            except LedgerError as exc:  # this witness is down: the others are still asked
                out.append(str(exc))
                continue
            if status != HTTPStatus.OK:
                out.append(f"witness {url}: refused ({status}: {reply.decode(errors='replace').strip()})")
                continue
            conn.execute("INSERT OR IGNORE INTO cosignatures VALUES (?, ?)", (cp_id, reply.rstrip(b"\n")))
            out.append(f"witness {url}: cosigned checkpoint of size {cp.size}")
        return out
    except (sqlite3.Error, CheckpointFormatError) as exc:
        raise LedgerError(f"{db}: cannot read the checkpoint to cosign ({exc})") from None
    finally:
        if own:
            conn.close()


class Cosigner:
    """The live writer's side: submits each new checkpoint to the witnesses from a background thread.

    Pass ``notify`` as (part of) the ledger's ``on_checkpoint``: it only wakes the thread,
    so a slow or down witness delays cosigning, never a decision. ``lag()`` is how long
    the newest checkpoint has waited for all witnesses (0 when they are all caught up):
    the witness-lag metric. Pass ``add_leaves`` as the ledger's ``on_leaves``: the writer
    hands over the leaf hashes it computed anyway, so the cosigner neither re-reads nor
    re-hashes the records (a queue the thread drains: the writer never waits); whatever
    it was not handed (records written before it listened) it reads from the database.
    """

    def __init__(
        self, db: Path, urls: list[str], *, timeout: float = 5.0, retry: float = 1.0, post: Post = _post, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db, self.urls, self.timeout, self.retry = Path(db), list(urls), timeout, retry
        self._post, self._clock = post, clock
        self._tree = MerkleTree([])
        self._wake, self._stop = threading.Event(), threading.Event()
        self._waiting_since: float | None = None
        self._fresh: deque[tuple[int, list[bytes]]] = deque()  # (first index, leaf hashes) from the writer
        self._conn: sqlite3.Connection | None = None  # the thread's own, kept between rounds
        self.last: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="mcsched-cosigner", daemon=True)

    def start(self) -> Cosigner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 1)
        if self._conn is not None and not self._thread.is_alive():
            self._conn.close()
            self._conn = None

    def notify(self, _cp: object = None) -> None:
        if self._waiting_since is None:
            self._waiting_since = self._clock()
        self._wake.set()

    def add_leaves(self, start: int, hashes: list[bytes]) -> None:
        """The writer's leaf hashes for leaves ``start``, ``start + 1``, ...; none: the writer rolled back to ``start``."""
        self._fresh.append((start, hashes))

    def _drain(self) -> None:
        """Extend the tree with the writer's hashes that continue it (a gap is left to the database)."""
        fresh = self._fresh
        while fresh:
            start, hashes = fresh[0]
            if not hashes:  # a failed commit: the hashes after ``start`` were never committed
                fresh.popleft()
                if start < len(self._tree):
                    self._tree = MerkleTree(self._tree.leaves[:start])
                continue
            have = len(self._tree)
            if start > have:
                return
            fresh.popleft()
            if start + len(hashes) > have:
                self._tree.leaves.extend(hashes[have - start :])

    def lag(self) -> float:
        since = self._waiting_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def round(self) -> list[str]:
        """One submission of the latest checkpoint to every witness (what the thread runs)."""
        started = self._clock()
        self._drain()
        if self._conn is None:
            self._conn = sqlite3.connect(str(self.db), isolation_level=None, timeout=self.timeout, check_same_thread=False)
            self._conn.text_factory = bytes
            self._conn.execute("PRAGMA synchronous=NORMAL")  # as the writer: WAL, no fsync per stored cosignature
        self.last = submit(self.db, self.urls, self.timeout, self._post, self._tree, self._conn)
        self._drain()  # what the database filled may be followed by queued hashes
        if all(": cosigned checkpoint" in line for line in self.last) and (self._waiting_since or 0) <= started:
            self._waiting_since = None
        return self.last

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.retry if self._waiting_since is not None else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.round()
            except LedgerError as exc:  # a down witness or a busy database: the next round retries
                self.last = [str(exc)]
