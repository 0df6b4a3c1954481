"""The witness log: every checkpoint, appended to a file outside the ledger.

Anyone who can write the ledger can roll it back to an earlier, validly signed state (drop
the last operations and their checkpoints). The witness remembers how far the log had
grown, so ``audit verify`` catches a truncation below any witnessed size and a rewrite of
any witnessed prefix. One JSON line per checkpoint: origin, size and the signed note.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import LedgerError
from scheduler.ledger.signing import Checkpoint, CheckpointFormatError, parse_checkpoint
from scheduler.paths import state_dir

WITNESS_NAME = "witness.jsonl"


def default_witness_path(home: str | Path | None = None) -> Path:
    """``$MCSCHED_WITNESS`` or ``witness.jsonl`` in ``home`` / ``$MCSCHED_HOME``."""
    env = os.environ.get("MCSCHED_WITNESS")
    return Path(env) if env else Path(home or state_dir()) / WITNESS_NAME


def witness_line(cp: Checkpoint) -> str:
    return json.dumps(
        {
            "origin": cp.origin,
            "size": cp.size,
            "checkpoint": cp.body().decode("ascii"),
            "signature": base64.b64encode(cp.signature).decode(),
        },
        separators=(",", ":"),
    )


class Witness:
    """Append-only writer (one line per checkpoint, flushed at once; kept open while in use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", encoding="ascii")  # noqa: SIM115 - kept open for the writer's life
        except OSError as exc:
            raise LedgerError(f"{path}: cannot open the witness log ({exc.strerror})") from None

    def append(self, cp: Checkpoint) -> None:
        try:
            self._fh.write(witness_line(cp) + "\n")
            self._fh.flush()
        except OSError as exc:
            raise LedgerError(f"{self.path}: cannot append to the witness log ({exc.strerror})") from None

    def close(self) -> None:
        self._fh.close()


@dataclass(frozen=True, slots=True)
class WitnessEntry:
    line: int
    checkpoint: Checkpoint | None  # None: the line names this origin but is unreadable
    problem: str = ""


def read_witness(path: Path, origin: str) -> Iterator[WitnessEntry]:
    """Entries of ``path`` for the ledger ``origin`` (other ledgers share the file)."""
    needle = origin.encode()
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the witness log ({exc.strerror})") from None
    with fh:
        for n, raw in enumerate(fh, 1):
            if needle not in raw:
                continue
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict) or doc.get("origin") != origin:
                    continue
                body, sig = doc["checkpoint"], doc["signature"]
                if not isinstance(body, str) or not isinstance(sig, str):
                    raise ValueError("checkpoint and signature must be strings")
                cp = parse_checkpoint(body.encode("ascii"), base64.b64decode(sig, validate=True))
            except (ValueError, KeyError, UnicodeError, binascii.Error, CheckpointFormatError) as exc:
                yield WitnessEntry(n, None, f"unreadable witness line {n} ({exc})")
                continue
            if cp.origin != origin or cp.size != doc.get("size"):
                yield WitnessEntry(n, None, f"witness line {n} does not match its checkpoint")
                continue
            yield WitnessEntry(n, cp)
