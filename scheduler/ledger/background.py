"""A ledger written by a child process, for a replay: the simulation never waits for the ledger.

Why: on a replay the ledger's work (canonical JSON, leaf hashes, the Merkle tree, SQLite
inserts, the final zstd seal) is about as much CPU as the engine's, and one Python process
does one at a time. Here the replay hands each batch of events to a forked writer as one
MessagePack message (msgspec, in C: a few hundred nanoseconds per event) and goes on; the
writer decodes them into the same event types and feeds the ordinary ``Ledger``, so the
records, MACs, checkpoints and signatures are the ones the in-process writer makes, byte
for byte, and ``mcsched audit verify`` reads the result unchanged. On two cores the replay
and its ledger run side by side.

It is for a run that writes a fresh ledger and nothing else (``mcsched simulate --ledger``):
the writer owns the file and the keys, the parent only sends events. Errors in the writer
(a full disk, a key it cannot create) come back as a ``LedgerError`` from the next
``flush``, from ``end`` or from ``wait``. The child uses the ``fork`` start method (the
replay's imports and data are already in memory); the child's CPU time is the parent's
``RUSAGE_CHILDREN`` once ``wait`` returns.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import msgspec

from scheduler.errors import LedgerError
from scheduler.events import EVENT_TYPES, Event

_TYPES: tuple[type[Event], ...] = tuple(EVENT_TYPES.values())
_INDEX: dict[type[Event], int] = {cls: i for i, cls in enumerate(_TYPES)}
_ENCODER = msgspec.msgpack.Encoder()


class BackgroundLedger:
    """``Ledger(path, signing_key=key)`` in a child process; ``sink`` is the engine's event sink.

    ``seal_to``: once every record is written and signed, the writer seals the ledger into
    that ``.zst`` file (``compact.seal``) and removes the plain one, so the compression runs
    beside the parent's summary too.
    """

    def __init__(self, path: Path, *, signing_key: Path, seal_to: Path | None = None) -> None:
        if len(_TYPES) > 255:
            raise LedgerError("too many event types for a one-byte tag")  # pragma: no cover - a guard for the wire format
        ctx = multiprocessing.get_context("fork")
        events_r, self._events = ctx.Pipe(duplex=False)
        self._results, results_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_writer, args=(path, signing_key, seal_to, events_r, results_w),
                                 name="mcsched-ledger-writer", daemon=True)
        self._proc.start()
        events_r.close()
        results_w.close()
        self._buffer: list[Event] = []
        self.sink = self._buffer.append  # the engine calls this for every event: a C call, nothing else
        self._ended = False
        self._answer: str | None = None
        self._expect("ready")

    def _expect(self, what: str) -> None:
        """The writer's next answer must be ``what``; anything else is its error, raised here."""
        answer = self._receive()
        if answer != what:
            self._proc.join()
            raise LedgerError(answer)

    def _receive(self) -> str:
        try:
            answer = self._results.recv_bytes().decode()
        except (EOFError, OSError):
            self._proc.join()
            answer = f"the ledger writer stopped (exit code {self._proc.exitcode})"
        return answer

    def flush(self) -> int:
        """Send the buffered events to the writer (one message); returns how many."""
        buf = self._buffer
        if not buf:
            return 0
        tags = bytes(map(_INDEX.__getitem__, map(type, buf)))  # in C: one byte per event naming its type
        payload = _ENCODER.encode(buf)
        try:
            self._events.send_bytes(tags)
            self._events.send_bytes(payload)
        except OSError:  # the writer is gone: its error says why
            self._proc.join()
            raise LedgerError(self._receive()) from None
        n = len(buf)
        buf.clear()
        return n

    def end(self) -> None:
        """Send what is left and tell the writer to sign, close (and seal); ``wait`` for it to finish."""
        if self._ended:
            return
        self.flush()
        self._ended = True
        with contextlib.suppress(OSError):  # the writer is gone: ``wait`` reports why
            self._events.send_bytes(b"")
        self._events.close()

    def wait(self) -> None:
        """Wait for the writer; raises its error, if any."""
        self.end()
        if self._answer is None:
            self._answer = self._receive()
            self._proc.join()
            self._results.close()
        if self._answer != "done":
            raise LedgerError(self._answer)

    def abort(self) -> None:
        """Stop the writer without finishing (an interrupted run: its files are thrown away)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._answer = self._answer or "aborted"


def _writer(path: Path, key: Path, seal_to: Path | None, events: Connection, results: Connection) -> None:
    """The child: open the ledger, write every batch it is sent, then close (and seal) it; answers on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it aborts this writer)
    from scheduler.ledger.compact import seal
    from scheduler.ledger.store import Ledger

    decoders = [msgspec.msgpack.Decoder(cls) for cls in _TYPES]
    split = msgspec.msgpack.Decoder(list[msgspec.Raw])
    try:
        ledger = Ledger(path, signing_key=key)
    except Exception as exc:  # any failure: reported to the parent as one line
        results.send_bytes(_line(exc).encode())
        return
    results.send_bytes(b"ready")
    try:
        while True:
            tags = events.recv_bytes()
            if not tags:
                break
            raws = split.decode(events.recv_bytes())
            for tag, raw in zip(tags, raws, strict=True):
                ledger(decoders[tag].decode(raw))
            ledger.flush()
        ledger.close()
        if seal_to is not None:
            seal(path, seal_to)
            os.unlink(path)
    except Exception as exc:  # reported to the parent as one line, which raises it
        results.send_bytes(_line(exc).encode())
        return
    results.send_bytes(b"done")


def _line(exc: BaseException) -> str:
    """One line for the parent's ``LedgerError``: the writer's own message, or the exception and where it happened."""
    if isinstance(exc, LedgerError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" ({Path(where.filename).name}:{where.lineno})" if where else ""
    return f"the ledger writer failed: {type(exc).__name__}: {exc}{at}"
