"""The audit ledger: an RFC 9162 Merkle log of every engine event, MAC'd as written, signed as C2SP checkpoints.

``store`` (SQLite; quarantine of records this writer did not write), ``records`` (the
canonical record bytes), ``merkle`` (hashing, compact range, proofs), ``note`` (C2SP
signed notes and cosignatures), ``signing`` (keys, tlog-checkpoints), ``actions``
(adopt / truncate), ``trust`` (the auditor's pinned trust file), ``witness`` (an
independent cosigner), ``verify`` (integrity + the independent checker), ``proofs`` (one
job's evidence, checkable without the ledger) and ``export`` (JSON Lines).
"""

from scheduler.ledger.records import MalformedRecord, decode, encode
from scheduler.ledger.store import Ledger
from scheduler.ledger.verify import VerifyReport, verify_ledger

__all__ = ["Ledger", "MalformedRecord", "VerifyReport", "decode", "encode", "verify_ledger"]
