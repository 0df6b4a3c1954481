"""Key rotation: a record signed by the old key introduces the new one; verify follows it from the pinned key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.ledger import Ledger
from tests.builders import a_job, two_clouds
from tests.ledger.forgery import World, raw_sql


def rotated(tmp: Path) -> tuple[World, Path]:
    w = World(tmp, two_clouds(azure_h100=8))
    w.op(lambda e: e.submit(a_job().named("a").gpus(8).obj()))
    w.close()
    new = tmp / "new" / "ledger-signing.key"
    try:
        main(["audit", "rotate", "--db", str(w.db), "--signing-key", str(w.key), "--new-key", str(new), "--why", "yearly", "--who", "ops"])
    except SystemExit as exc:
        assert not exc.code
    return w, new


def test_verify_follows_a_rotation_from_the_pinned_key(tmp_path: Path) -> None:
    w, new = rotated(tmp_path)
    ledger = Ledger(w.db, signing_key=new, checkpoint_interval=0)  # the writer goes on with the new key
    ledger.close()
    report = w.verify()  # the trust file pins the original key
    assert report.ok, report.line()
    assert any(a.startswith("log key rotated at size ") and "by ops" in a and "(yearly)" in a for a in report.adopted), report.adopted
    with pytest.raises(Exception, match="not signed by this writer's key"):
        Ledger(w.db, signing_key=w.key)  # the old key may no longer write


def test_a_rotation_the_old_key_did_not_sign_fails(tmp_path: Path) -> None:
    """A rotation re-signed by anyone but the old key (here the new key itself) no longer matches what the checkpoints name."""
    w, new = rotated(tmp_path)
    conn = sqlite3.connect(w.db)
    (signed,) = conn.execute("SELECT note FROM actions").fetchone()
    conn.close()
    from scheduler.ledger import note
    from scheduler.ledger.signing import load_private_key

    text, _ = note.split(bytes(signed))
    forged = note.signed_note(text, note.sign(text, "test.example/ledger", load_private_key(new)))
    raw_sql(w.db, "UPDATE actions SET note = ?", forged)
    line = w.verify().line()
    assert "names an operator action the ledger does not hold" in line or "not signed by the trusted key" in line, line


def test_after_rotation_the_old_key_cannot_extend_the_log(tmp_path: Path) -> None:
    w, _ = rotated(tmp_path)
    from scheduler.ledger.signing import Checkpoint, load_private_key
    from tests.ledger.forgery import last_checkpoint

    cp = last_checkpoint(w.db)
    stale = Checkpoint(cp.origin, cp.size, cp.root, cp.extensions).signed(load_private_key(w.key))
    raw_sql(w.db, "INSERT INTO checkpoints (size, note) VALUES (?, ?)", stale.size, stale.note)
    assert "is not signed by the trusted key" in w.verify().line()


def test_a_proof_made_after_a_rotation_checks_against_the_original_pin(tmp_path: Path) -> None:
    from scheduler.ledger.proofs import check_proof, prove
    from scheduler.ledger.signing import load_public_key, log_verifier
    from tests.ledger.forgery import ORIGIN

    w, _ = rotated(tmp_path)
    doc = prove(w.db, "a")
    pinned = log_verifier(ORIGIN, load_public_key(w.pub))  # the key pinned before the rotation
    result = check_proof(doc, pinned)
    assert result.ok and len(doc["rotations"]) == 1, result.line
    doc["rotations"] = []
    assert "does not verify with the trusted key" in check_proof(doc, pinned).line
