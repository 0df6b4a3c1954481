"""A replay's ledger and contract checker, run by a child process beside the replay.

Why: on a replay the ledger's work (canonical JSON, leaf hashes, the Merkle tree, SQLite
inserts, the final zstd seal) is about as much CPU as the engine's, and the contract
checker a sixth of it, and one Python process does one thing at a time. Here the replay
hands each batch of events to a forked worker as one MessagePack message (msgspec, in C:
a few hundred nanoseconds per event) and goes on. The worker decodes them into the same
event types and feeds the ordinary ``Ledger`` (so the records, MACs, checkpoints and
signatures are the ones the in-process writer makes, byte for byte, and ``mcsched audit
verify`` reads the result unchanged) and the ordinary ``InvariantChecker`` (the same
violations, returned by ``wait``). On two cores the replay and its worker run side by side.

It is for a run that writes a fresh ledger and nothing else (``mcsched simulate``): the
worker owns the file and the keys, the parent only sends events. Errors in the worker (a
full disk, a key it cannot create) come back as a ``LedgerError`` from the next ``flush``,
or from ``wait``. The child uses the ``fork`` start method (the replay's imports and data
are already in memory); its CPU time is the parent's ``RUSAGE_CHILDREN`` once ``wait``
returns.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from scheduler.errors import LedgerError
from scheduler.events import EVENT_TYPES, Event

_TYPES: tuple[type[Event], ...] = tuple(EVENT_TYPES.values())
_INDEX: dict[type[Event], int] = {cls: i for i, cls in enumerate(_TYPES)}
_ENCODER = msgspec.msgpack.Encoder()


class ReplayWorker:
    """A child process that writes ``Ledger(path, signing_key=key)`` and/or runs the contract's checker.

    ``sink`` is the engine's event sink; ``flush`` sends the batch. ``path=None``: no
    ledger, only the checker. ``seal_to``: once every record is written and signed, the
    worker seals the ledger into that ``.zst`` file (``compact.seal``) and removes the plain
    one, so the compression runs beside the parent's summary too. ``check``: the worker runs
    an ``InvariantChecker`` on the stream; ``wait`` returns its violations (None without).
    """

    def __init__(self, path: Path | None, *, signing_key: Path | None = None, seal_to: Path | None = None, check: bool = False) -> None:
        if len(_TYPES) > 255:
            raise LedgerError("too many event types for a one-byte tag")  # pragma: no cover - a guard for the wire format
        ctx = multiprocessing.get_context("fork")
        events_r, self._events = ctx.Pipe(duplex=False)
        self._results, results_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_worker, args=(path, signing_key, seal_to, check, events_r, results_w),
                                 name="mcsched-replay-worker", daemon=True)
        self._proc.start()
        events_r.close()
        results_w.close()
        self._buffer: list[Event] = []
        self.sink = self._buffer.append  # the engine calls this for every event: a C call, nothing else
        self._ended = False
        self._answer: tuple[str, Any] | None = None
        answer = self._receive()
        if answer[0] != "ready":
            self._proc.join()
            raise LedgerError(answer[1])

    def _receive(self) -> tuple[str, Any]:
        try:
            answer: tuple[str, Any] = pickle.loads(self._results.recv_bytes())
        except (EOFError, OSError):
            self._proc.join()
            answer = ("error", f"the replay's ledger/checker worker stopped (exit code {self._proc.exitcode})")
        return answer

    def flush(self) -> int:
        """Send the buffered events to the worker (one message); returns how many."""
        buf = self._buffer
        if not buf:
            return 0
        tags = bytes(map(_INDEX.__getitem__, map(type, buf)))  # in C: one byte per event naming its type
        payload = _ENCODER.encode(buf)
        try:
            self._events.send_bytes(tags)
            self._events.send_bytes(payload)
        except OSError:  # the worker is gone: its error says why
            self._proc.join()
            raise LedgerError(self._receive()[1]) from None
        n = len(buf)
        buf.clear()
        return n

    def end(self) -> None:
        """Send what is left and tell the worker to finish (sign, close, seal); ``wait`` for it."""
        if self._ended:
            return
        self.flush()
        self._ended = True
        with contextlib.suppress(OSError):  # the worker is gone: ``wait`` reports why
            self._events.send_bytes(b"")
        self._events.close()

    def wait(self) -> list[Any] | None:
        """Wait for the worker; returns the checker's violations (None if it ran none), raises the worker's error."""
        self.end()
        if self._answer is None:
            self._answer = self._receive()
            self._proc.join()
            self._results.close()
        kind, value = self._answer
        if kind != "done":
            raise LedgerError(value)
        return value  # type: ignore[no-any-return]

    def abort(self) -> None:
        """Stop the worker without finishing (an interrupted run: its files are thrown away)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._answer = self._answer or ("error", "the replay's ledger/checker worker was aborted")


def _worker(path: Path | None, key: Path | None, seal_to: Path | None, check: bool, events: Connection, results: Connection) -> None:
    """The child: open the ledger, feed it and the checker every batch, then close (and seal); answers on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it aborts this worker)
    from scheduler.invariants import InvariantChecker
    from scheduler.ledger.compact import seal
    from scheduler.ledger.store import Ledger

    def answer(kind: str, value: Any) -> None:
        results.send_bytes(pickle.dumps((kind, value)))

    decoders = [msgspec.msgpack.Decoder(cls) for cls in _TYPES]
    split = msgspec.msgpack.Decoder(list[msgspec.Raw])
    ledger: Ledger | None = None
    try:
        if path is not None:
            ledger = Ledger(path, signing_key=key, durable=False)  # a fresh file, discarded if this run fails
    except Exception as exc:  # any failure: reported to the parent as one line
        answer("error", _line(exc))
        return
    checker = InvariantChecker() if check else None
    watch = checker.watch() if checker is not None else None
    count = 0
    answer("ready", None)
    try:
        while True:
            tags = events.recv_bytes()
            if not tags:
                break
            raws = split.decode(events.recv_bytes())
            count += len(tags)
            # each event decoded, kept for the ledger (an append in C, not the ledger's Python ``__call__``)
            # and checked while it is fresh in the cache; without a ledger nothing holds the batch
            batch: list[Event] = []
            add = batch.append if ledger is not None else None
            for tag, raw in zip(tags, raws, strict=True):
                ev = decoders[tag].decode(raw)
                if add is not None:
                    add(ev)
                if watch is not None:
                    watch(ev)
            if ledger is not None:
                ledger.extend(batch)
                ledger.flush()
        if checker is not None:
            checker.finish(count + 1)  # as the in-process replay's: one past the last event
        if ledger is not None and path is not None:
            ledger.close()
            if seal_to is not None:
                seal(path, seal_to)
                os.unlink(path)
    except Exception as exc:  # reported to the parent as one line, which raises it
        answer("error", _line(exc))
        return
    answer("done", checker.violations if checker is not None else None)


def _line(exc: BaseException) -> str:
    """One line for the parent's ``LedgerError``: the worker's own message, or the exception and where it happened."""
    if isinstance(exc, LedgerError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" ({Path(where.filename).name}:{where.lineno})" if where else ""
    return f"the ledger writer failed: {type(exc).__name__}: {exc}{at}"
