"""Pinned trust (issue 27, problem 3 and 5): the verifier takes the origin, the key, the
witnesses and the documents in force from a trust file, never from the ledger under test.

A fork under another origin, a re-signed ledger with a replaced ``.pub``, a missing trust
file, a contract that names another holder: each is one line, exit 1 (bad evidence) or 2
(bad usage).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from scheduler.ledger.signing import generate_key, load_public_key, log_verifier
from scheduler.ledger.trust import doc_hash
from tests.builders import a_contract, a_job, two_clouds
from tests.cli_runner import run_joined as run
from tests.ledger.forgery import ORIGIN, World, canonical, last_checkpoint, raw_sql, rehash


@pytest.fixture
def closed(tmp_path: Path) -> World:
    w = World(tmp_path, two_clouds(azure_h100=8))
    w.op(lambda e: e.submit(a_job().named("a").gpus(8).obj()))
    w.op(lambda e: e.submit(a_job().named("b").gpus(8).obj()))
    w.close()
    return w


def trust_file(w: World, *, origin: str = ORIGIN, pub: Path | None = None, extra: str = "") -> Path:
    vkey = log_verifier(origin, load_public_key(pub or w.pub)).vkey()
    path = w.tmp / "trust.toml"
    path.write_text(f'log = "{vkey}"\n{extra}')
    return path




def verify(capsys: pytest.CaptureFixture[str], w: World, *extra: str) -> tuple[int, str]:
    return run(capsys, "audit", "verify", "--db", str(w.db), *extra)


def test_a_pinned_ledger_verifies(closed: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = verify(capsys, closed, "--trust", str(trust_file(closed)))
    assert code == 0 and f"origin {ORIGIN} pinned by" in text and len(text.splitlines()) == 1, text


def test_a_fork_under_another_origin_fails(closed: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The insider re-signs the history (a job erased) under a fresh origin with the real key."""
    from scheduler.ledger.signing import Checkpoint, load_private_key

    recs = [r for r in closed.records() if r.get("job") != "b"]
    rehash(closed, lambda _: recs, "real")
    cp = last_checkpoint(closed.db)
    forked = Checkpoint("fork.example/ledger", cp.size, cp.root).signed(load_private_key(closed.key))
    raw_sql(closed.db, "DELETE FROM checkpoints")
    raw_sql(closed.db, "INSERT INTO checkpoints (size, note) VALUES (?, ?)", forked.size, forked.note)
    code, text = verify(capsys, closed, "--trust", str(trust_file(closed)))
    assert code == 1 and "is for origin 'fork.example/ledger', the trusted log is 'test.example/ledger'" in text, text
    assert len(text.splitlines()) == 1


def test_a_replaced_public_key_fails(closed: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Re-signed with the attacker's key and their .pub put in place: only a pinned key notices."""
    trust = trust_file(closed)  # written before the attack, from the key the auditor trusts
    generate_key(closed.tmp / "evil.key")
    from scheduler.ledger.signing import Checkpoint, load_private_key

    rehash(closed, lambda r: [x for x in r if x.get("job") != "b"], "none")  # job b erased
    cp = last_checkpoint(closed.db)
    evil = Checkpoint(ORIGIN, cp.size, cp.root).signed(load_private_key(closed.tmp / "evil.key"))
    raw_sql(closed.db, "UPDATE checkpoints SET note = ?", evil.note)
    (closed.tmp / "evil.pub").replace(closed.pub)
    code, text = verify(capsys, closed, "--public-key", str(closed.pub))
    assert code == 0 and "NOT pinned" in text, text  # a key taken from beside the ledger proves nothing
    code, text = verify(capsys, closed, "--trust", str(trust))
    assert code == 1 and "is not signed by the trusted key" in text and len(text.splitlines()) == 1, text


@pytest.mark.parametrize(
    "content,expect",
    [
        (None, "no such trust file"),
        ("log = [", "not a TOML trust file"),
        ('log = "nope"', "is not name+hash+key"),
        ('log = "{log}"\nquorum = 2\nwitnesses = []', "quorum: 2 cosignatures required, 0 witnesses listed"),
        ('log = "{log}"\nwitnesses = ["{log}"]', "each must be a cosignature/v1 key"),
        ('log = "{log}"\nsurprise = 1', "surprise: Extra inputs are not permitted"),
        ('log = "{log}"\n[[contract]]\nsha256 = "abc"', "contract.0.sha256"),
    ],
    ids=["missing", "bad-toml", "bad-vkey", "quorum", "wrong-key-type", "unknown-field", "bad-hash"],
)
def test_a_bad_trust_file_is_a_usage_error(closed: World, capsys: pytest.CaptureFixture[str], content: str | None, expect: str) -> None:
    path = closed.tmp / "t.toml"
    if content is not None:
        path.write_text(content.replace("{log}", log_verifier(ORIGIN, load_public_key(closed.pub)).vkey()))
    code, text = verify(capsys, closed, "--trust", str(path))
    assert code == 2 and expect in text and len(text.splitlines()) == 1 and "Traceback" not in text, text


def test_witness_option_points_to_trust_and_require_signed_is_accepted(closed: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = verify(capsys, closed, "--witness", str(closed.tmp / "nowhere.jsonl"))
    assert code == 2 and "--trust FILE" in text and len(text.splitlines()) == 1, text
    code, text = verify(capsys, closed, "--public-key", str(closed.pub), "--require-signed")
    assert code == 0 and "OK: " in text, text


def test_a_required_quorum_without_cosignatures_fails(closed: World, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from scheduler.ledger import note

    wkey = note.verifier("azure.example/w1", Ed25519PrivateKey.generate().public_key(), note.ALG_COSIGNATURE_V1).vkey()
    code, text = verify(capsys, closed, "--trust", str(trust_file(closed, extra=f'witnesses = ["{wkey}"]\nquorum = 1\n')))
    assert code == 1 and "has 0 of the 1 witness cosignatures" in text, text


def pins(w: World, *contracts: tuple[dict, float, float]) -> str:
    out = ""
    for doc, start, end in contracts:
        out += f'[[contract]]\nsha256 = "{doc_hash(doc)}"\nfrom = {start}\nuntil = {end}\n'
    return out


def test_a_contract_that_names_another_holder_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The contract is read from the trust file's pins, not believed because the ledger recorded it."""
    agreed = a_contract().model_dump(mode="json", by_alias=True)
    w = World(tmp_path, two_clouds(azure_h100=8), a_contract(holder="oci"))
    w.op(lambda e: e.submit(a_job().named("a").gpus(8).obj()))
    w.close()
    assert w.verify().ok  # self-consistent: only the pin tells it is not the agreed contract
    code, text = verify(capsys, w, "--trust", str(trust_file(w, extra=pins(w, (agreed, 0.0, 1e12)))))
    assert code == 1 and "trust: contract sha256" in text and "is not in the trust file" in text, text


def test_a_reload_within_its_validity_is_accepted_a_swap_is_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = a_contract(), a_contract(window=60.0)
    w = World(tmp_path, two_clouds(azure_h100=8), first)
    w.clock.advance(100.0)
    w.op(lambda e: e.reconfigure(second, "renegotiated"))
    w.op(lambda e: e.submit(a_job().named("a").gpus(8).obj()))
    w.close()
    d1, d2 = (c.model_dump(mode="json", by_alias=True) for c in (first, second))
    good = trust_file(w, extra=pins(w, (d1, 0.0, 100.0), (d2, 100.0, 1e12)))
    code, text = verify(capsys, w, "--trust", str(good))
    assert code == 0 and "contracts and catalogs pinned" in text, text
    early = trust_file(w, extra=pins(w, (d1, 0.0, 100.0), (d2, 500.0, 1e12)))
    code, text = verify(capsys, w, "--trust", str(early))
    assert code == 1 and "is pinned, but not for time 100.0" in text, text


def test_trust_command_writes_a_file_verify_accepts(closed: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(capsys, "audit", "trust", "--origin", ORIGIN, "--public-key", str(closed.pub))
    assert code == 0
    path = closed.tmp / "made.toml"
    path.write_text(text + "\n")
    code, text = verify(capsys, closed, "--trust", str(path))
    assert code == 0 and "pinned by" in text, text


def test_records_are_unchanged_by_pins(closed: World) -> None:
    assert canonical(closed.records()[0]) == bytes(sqlite3.connect(closed.db).execute("SELECT leaf FROM records WHERE seq = 1").fetchone()[0])
