"""The audit ledger: an RFC 9162 Merkle log of every engine event, signed within a bounded delay (store.CHECKPOINT_INTERVAL).

``store`` (SQLite), ``records`` (the canonical record bytes), ``merkle`` (hashing,
compact range, proofs), ``signing`` (Ed25519 keys, checkpoints), ``witness`` (the log
outside the file), ``verify`` (integrity + the independent checker), ``proofs``
(one job's evidence, checkable without the ledger) and ``export`` (JSON Lines).
"""

from scheduler.ledger.records import MalformedRecord, decode, encode
from scheduler.ledger.store import Ledger
from scheduler.ledger.verify import VerifyReport, verify_ledger

__all__ = ["Ledger", "MalformedRecord", "VerifyReport", "decode", "encode", "verify_ledger"]
