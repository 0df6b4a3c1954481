"""Ledgers written before v3: refused by the v3 writer and verifier with one line, or migrated
(``mcsched audit migrate``) into a new v3 ledger that records where it came from."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.events import Event
from scheduler.ledger import Ledger
from scheduler.ledger.merkle import CompactRange, leaf_hash
from scheduler.ledger.records import encode
from scheduler.ledger.signing import generate_key, key_id, load_public_key, log_verifier
from scheduler.ledger.verify import verify_ledger
from tests.builders import a_contract, a_job, two_clouds
from tests.cli_runner import run_joined as run

V2_SCHEMA = """
CREATE TABLE records (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL);
CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, body BLOB NOT NULL, signature BLOB NOT NULL);
"""


def v2_ledger(tmp: Path, unsigned_tail: bool = False) -> Path:
    """A ledger as mcsched wrote it before v3: canonical records, one mcsched-ledger-checkpoint/v1 checkpoint."""
    key = generate_key(tmp / "old.key")
    events: list[Event] = []
    engine = Engine(two_clouds(azure_h100=8), a_contract(), ManualClock())
    engine.subscribe(events.append)
    engine.announce()
    for i in range(3):
        engine.submit(a_job().named(f"j{i}").gpus(8).obj())
    before_release = len(events)
    engine.release("j0")  # with unsigned_tail: this operation came after the last checkpoint
    leaves = [encode(seq, ev) for seq, ev in enumerate(events, 1)]
    signed = before_release if unsigned_tail else len(leaves)
    tree = CompactRange()
    for leaf in leaves[:signed]:
        tree.append(leaf_hash(leaf))
    body = (f"mcsched-ledger-checkpoint/v1\norigin-v2\n{signed}\n{base64.b64encode(tree.root()).decode()}\n"
            f"time 1.0\nprev {'0' * 64}\nkey {key_id(key.public_key())}\n").encode()
    db = tmp / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(V2_SCHEMA)
    conn.executemany("INSERT INTO records VALUES (?, ?)", list(enumerate(leaves, 1)))
    conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (signed, body, key.sign(body)))
    conn.commit()
    conn.close()
    return db




def test_a_v2_ledger_is_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = v2_ledger(tmp_path)
    before = db.read_bytes()
    with pytest.raises(Exception, match="a v2 ledger"):
        Ledger(db, signing_key=tmp_path / "k.key")
    assert "a v2 ledger" in verify_ledger(db, tmp_path / "old.pub").line()
    assert db.read_bytes() == before


def test_migrate_writes_a_v3_ledger_that_records_its_origin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = v2_ledger(tmp_path, unsigned_tail=True)
    new = tmp_path / "new.db"
    code, text = run(capsys, "audit", "migrate", "--db", str(old), "--to", str(new), "--public-key", str(tmp_path / "old.pub"),
                     "--signing-key", str(tmp_path / "new.key"), "--why", "upgrade to v3", "--who", "ops")
    assert code == 0, text
    report = verify_ledger(new, tmp_path / "new.pub")
    assert report.ok, report.line()
    (adopted,) = report.adopted
    assert "migrated from v2 ledger" in adopted and "origin origin-v2" in adopted and "unsigned records after it left out" in adopted
    assert "by ops" in adopted and "upgrade to v3" in adopted


def test_migrate_refuses_an_altered_or_foreign_v2_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = v2_ledger(tmp_path)
    generate_key(tmp_path / "other.key")
    code, text = run(capsys, "audit", "migrate", "--db", str(old), "--to", str(tmp_path / "a.db"), "--public-key", str(tmp_path / "other.pub"), "--why", "x")
    assert code == 1 and "not signed by the given public key" in text and not (tmp_path / "a.db").exists(), text
    conn = sqlite3.connect(old)
    conn.execute("""UPDATE records SET leaf = CAST(replace(CAST(leaf AS TEXT), '"at":', '"at":1') AS BLOB) WHERE seq = 3""")
    conn.commit()
    conn.close()
    code, text = run(capsys, "audit", "migrate", "--db", str(old), "--to", str(tmp_path / "b.db"), "--public-key", str(tmp_path / "old.pub"), "--why", "x")
    assert code == 1 and "do not match the signed checkpoint" in text and not (tmp_path / "b.db").exists(), text
    assert log_verifier("x.example/y", load_public_key(tmp_path / "old.pub")).vkey().startswith("x.example/y+")
