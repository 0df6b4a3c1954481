"""A closed ledger as one zstd frame (``FILE.zst``): the same SQLite file, about ten times smaller.

A replay's ledger is written once and then only read (``mcsched audit verify``, ``export``,
``prove``). Its records are canonical JSON leaves with the same keys over and over, which
zstd shrinks about tenfold (a 1,000,000-job replay: ~1.6 GB of SQLite, ~170 MB sealed).
The leaves, the Merkle tree, the checkpoints and their signatures are untouched: sealing
compresses the database file as a whole, and reading it decompresses it to a private
temporary file that the unchanged verifier opens. A sealed ledger is read-only; a writer
(``Ledger``) never opens one.

Why the whole file and not each record: a record is ~270 bytes, too short for a compressor
to find the repetition without a shared dictionary, and compressing leaves inside the
database would change every reader of the ``records`` table; the whole file compresses at
~150 MB/s and every reader stays as it is. zstd (the ``zstandard`` bindings) rather than
gzip: twice the ratio at level 1 and several times the speed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zstandard

from scheduler.errors import LedgerError

SUFFIX = ".zst"
MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame's first four bytes (RFC 8878)
LEVEL = 1  # ~10x on ledger files at ~150 MB/s; higher levels gain little on this data and cost several times the time


def wants_compact(path: Path) -> bool:
    """A ledger path naming a sealed ledger (``*.zst``)."""
    return path.name.endswith(SUFFIX)


def is_sealed(path: Path) -> bool:
    """Whether ``path`` holds a zstd frame (a sealed ledger), whatever its name."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def seal(db: Path, out: Path) -> None:
    """Compress the closed SQLite ledger ``db`` into ``out`` (0600, as the ledger's files are)."""
    for side in ("-wal", "-shm"):
        if db.with_name(db.name + side).exists():
            raise LedgerError(f"{db}: still open ({db.name}{side} exists): close the ledger before sealing it")
    with db.open("rb") as src, out.open("wb") as dst:
        out.chmod(0o600)
        zstandard.ZstdCompressor(level=LEVEL, threads=-1).copy_stream(src, dst)


@contextmanager
def readable(path: Path) -> Iterator[Path]:
    """``path`` itself, or for a sealed ledger a decompressed copy in a private temporary folder (removed after)."""
    if not is_sealed(path):
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="mcsched-ledger-"))  # 0700
    try:
        db = tmp / path.name.removesuffix(SUFFIX)
        try:
            with path.open("rb") as src, db.open("wb") as dst:
                zstandard.ZstdDecompressor().copy_stream(src, dst)
        except zstandard.ZstdError as exc:
            raise LedgerError(f"{path}: not a readable sealed ledger ({exc})") from None
        yield db
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
