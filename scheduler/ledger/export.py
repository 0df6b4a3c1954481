"""``audit export``: the records as JSON Lines, byte for byte the Merkle leaves.

Each line is one record exactly as hashed (canonical JSON: ``seq``, ``at``, ``kind`` and
the event's fields, sorted keys), so an auditor's own tools can recompute every leaf hash
as SHA-256(0x00 || line) and the root with any RFC 9162 implementation.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from scheduler.errors import LedgerError
from scheduler.ledger.verify import connect_readonly


def export_lines(db: Path) -> Iterator[bytes]:
    conn = connect_readonly(db)
    try:
        for (leaf,) in conn.execute("SELECT leaf FROM records ORDER BY seq"):
            if type(leaf) is not bytes:
                raise LedgerError(f"{db}: a record is not bytes; run `mcsched audit verify --db {db}`")
            yield leaf
    except sqlite3.Error as exc:
        raise LedgerError(f"{db}: not a usable ledger ({exc})") from None
    finally:
        conn.close()
