"""Bad input (issue 27, problem 6): junk or truncated databases, SQLite files that are not
ledgers, proofs nested 10,000 deep or a gigabyte large, keys of the wrong type. Each is one
line, no traceback, and nothing is written."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scheduler.errors import LedgerError
from scheduler.ledger.proofs import load_proof, prove
from scheduler.paths import examples_dir
from tests.builders import a_job, two_clouds
from tests.cli_runner import run_joined as run
from tests.ledger.forgery import World

JOB = str(examples_dir() / "job.yaml")




@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(tmp_path_factory.mktemp("bad"), two_clouds(azure_h100=8))
    w.op(lambda e: e.submit(a_job().named("a").gpus(8).obj()))
    w.close()
    return w


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def one_line_failure(code: int, text: str) -> None:
    assert code in (1, 2) and len(text.splitlines()) == 1 and "Traceback" not in text, (code, text)


def non_ledger(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'x');")
    conn.close()
    return path


@pytest.mark.parametrize("kind", ["junk", "truncated", "non-ledger", "empty-file"])
def test_plan_db_on_a_bad_database_is_one_line_and_writes_nothing(
    made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("MCSCHED_HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    db = work / "l.db"
    if kind == "junk":
        db.write_bytes(os.urandom(5000))
    elif kind == "truncated":
        db.write_bytes(made.db.read_bytes()[:3000])
    elif kind == "non-ledger":
        non_ledger(db)
    else:
        db.write_bytes(b"")
    before = snapshot(work)
    code, text = run(capsys, "plan", JOB, "--db", str(db))
    if kind == "empty-file":  # an empty file is a new ledger
        assert code == 0, text
        return
    one_line_failure(code, text)
    assert str(db) in text
    assert snapshot(work) == before  # no byte changed, no -wal or -shm file left


@pytest.mark.parametrize("kind", ["junk", "truncated", "non-ledger"])
def test_verify_on_a_bad_database_is_one_line(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    db = tmp_path / "l.db"
    if kind == "junk":
        db.write_bytes(os.urandom(5000))
    elif kind == "truncated":
        db.write_bytes(made.db.read_bytes()[:3000])
    else:
        non_ledger(db)
    before = db.read_bytes()
    code, text = run(capsys, "audit", "verify", "--db", str(db), "--public-key", str(made.pub))
    one_line_failure(code, text)
    assert code == 1 and db.read_bytes() == before


def test_a_proof_nested_10000_deep_is_one_line(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proof = tmp_path / "deep.json"
    proof.write_text('{"format": ' + "[" * 10_000 + "]" * 10_000 + "}")
    code, text = run(capsys, "audit", "check-proof", str(proof), "--public-key", str(made.pub))
    one_line_failure(code, text)
    assert "nested too deep" in text or "not" in text, text


def test_a_gigabyte_proof_is_refused_unread(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proof = tmp_path / "huge.json"
    with proof.open("wb") as fh:  # sparse: a gigabyte long, next to nothing on disk
        fh.truncate(1 << 30)
    code, text = run(capsys, "audit", "check-proof", str(proof), "--public-key", str(made.pub))
    one_line_failure(code, text)
    assert "larger than any proof" in text, text


def test_the_proof_size_limit_applies_below_the_default(made: World, tmp_path: Path) -> None:
    import json

    proof = tmp_path / "p.json"
    proof.write_text(json.dumps(prove(made.db, "a")))
    assert load_proof(proof)["job"] == "a"
    with pytest.raises(LedgerError, match="larger than any proof"):
        load_proof(proof, limit=100)


def rsa_pem(private: bool) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if private:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("content", [b"not a key", b"RSA"], ids=["garbage", "rsa"])
def test_a_signing_key_of_the_wrong_type_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(rsa_pem(True) if content == b"RSA" else content)
    code, text = run(capsys, "plan", JOB, "--db", str(tmp_path / "new.db"), "--signing-key", str(key))
    one_line_failure(code, text)
    assert code == 2 and "k.key" in text and ("Ed25519" in text), (code, text)
    assert not (tmp_path / "new.db").exists()


@pytest.mark.parametrize("content", [b"not a key", b"RSA"], ids=["garbage", "rsa"])
def test_a_public_key_of_the_wrong_type_is_one_line(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    pub = tmp_path / "k.pub"
    pub.write_bytes(rsa_pem(False) if content == b"RSA" else content)
    code, text = run(capsys, "audit", "verify", "--db", str(made.db), "--public-key", str(pub))
    one_line_failure(code, text)
    assert code == 2 and "Ed25519" in text, (code, text)  # a key that is not one is bad input, not bad evidence


@pytest.mark.parametrize("missing", ["db", "public-key"])
def test_a_missing_input_file_is_a_usage_error_not_bad_evidence(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str) -> None:
    """Exit 1 means the evidence is bad; a typo in a path is exit 2 (docs/audit.md), naming the option."""
    db = tmp_path / "typo.db" if missing == "db" else made.db
    pub = tmp_path / "typo.pub" if missing == "public-key" else made.pub
    code, text = run(capsys, "audit", "verify", "--db", str(db), "--public-key", str(pub))
    assert code == 2 and text == f"audit verify: --{missing} {tmp_path}/typo.{'db' if missing == 'db' else 'pub'}: no such file", (code, text)


def test_a_bad_record_mac_key_is_one_line(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "ledger-signing.key"
    key.write_bytes(made.key.read_bytes())
    (tmp_path / "ledger-mac.key").write_bytes(b"xyz\n")
    code, text = run(capsys, "plan", JOB, "--db", str(tmp_path / "new.db"), "--signing-key", str(key))
    one_line_failure(code, text)
    assert "ledger-mac.key: not a record MAC key" in text, text
    assert not (tmp_path / "new.db").exists()


def test_a_junk_witness_state_is_one_line(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.ledger.signing import load_public_key, log_verifier
    from tests.ledger.forgery import ORIGIN

    state = tmp_path / "state.json"
    state.write_text("[" * 10_000)
    vkey = log_verifier(ORIGIN, load_public_key(made.pub)).vkey()
    code, text = run(capsys, "witness", "run", "--log", vkey, "--key", str(tmp_path / "w.key"), "--state", str(state), "--port", "0")
    one_line_failure(code, text)
    assert code == 2 and "unreadable witness state" in text, text
    assert not (tmp_path / "w.key").exists()  # refused before the key is made


@pytest.mark.parametrize("command", [["prove", "a"], ["export"]], ids=["prove", "export"])
@pytest.mark.parametrize("kind", ["junk", "non-ledger"])
def test_prove_and_export_on_a_bad_database_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], kind: str) -> None:
    db = tmp_path / "l.db"
    if kind == "junk":
        db.write_bytes(os.urandom(5000))
    else:
        non_ledger(db)
    before = db.read_bytes()
    code, text = run(capsys, "audit", *command, "--db", str(db))
    one_line_failure(code, text)
    assert db.read_bytes() == before


AUDIT_ON_A_LEDGER = {  # every audit command that reads or amends the ledger named by --db
    "verify": ["--public-key", "{pub}"],
    "prove": ["a"],
    "export": [],
    "adopt": ["--why", "x"],
    "truncate": ["--why", "x"],
    "rotate": ["--new-key", "{tmp}/next.key", "--why", "x"],
    "migrate": ["--to", "{tmp}/new.db", "--public-key", "{pub}", "--why", "x"],
    "cosign": ["--witness-url", "http://127.0.0.1:9"],
}


@pytest.mark.parametrize("command", sorted(AUDIT_ON_A_LEDGER))
@pytest.mark.parametrize("what", ["missing", "directory"])
def test_every_audit_command_refuses_a_ledger_that_is_not_there_as_a_usage_error_and_creates_nothing(
    made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str, what: str
) -> None:
    """A typo in --db is exit 2 naming the option (docs/cli.md), never bad evidence (1), and never
    a new ledger: `adopt`, `rotate` and `cosign` used to create one at the mistyped path and succeed."""
    monkeypatch.setenv("MCSCHED_HOME", str(tmp_path / "home"))
    db = tmp_path / "typo.db"
    if what == "directory":
        db.mkdir()
    extra = [a.format(pub=made.pub, tmp=tmp_path) for a in AUDIT_ON_A_LEDGER[command]]
    code, text = run(capsys, "audit", command, *(extra[:1] if command == "prove" else []), "--db", str(db), *([] if command == "prove" else extra))
    reason = "no such file" if what == "missing" else "a directory, not a file"
    assert (code, text) == (2, f"audit {command}: --db {db}: {reason}")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["typo.db"] if what == "directory" else [])


def test_prove_since_must_name_a_size_the_log_has_signed(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--since 0 used to be a ValueError traceback; a size above the latest checkpoint was ignored (no
    consistency proof, exit 0). The second is evidence: whoever holds it holds more than the log signs."""
    sizes = [int(n) for (n,) in sqlite3.connect(made.db).execute("SELECT size FROM checkpoints ORDER BY id")]
    size = sizes[-1]
    assert "consistency" in prove(made.db, "a", since=next(n for n in sizes if 0 < n < size))  # the proof it asks for, where it exists
    code, text = run(capsys, "audit", "prove", "a", "--db", str(made.db), "--since", "0")
    assert (code, text) == (2, "error: --since 0: a consistency proof starts from a checkpoint of size 1 or more (every log extends the empty one)")
    code, text = run(capsys, "audit", "prove", "a", "--db", str(made.db), "--since", str(size + 1))
    assert code == 1 and text == (
        f"error: {made.db}: --since {size + 1}: the latest signed checkpoint has size {size}, smaller: "
        f"the log does not extend a checkpoint of size {size + 1}"
    )


@pytest.mark.parametrize("url", ["notaurl", "http://[::1", "ftp://127.0.0.1/w", "http://127.0.0.1:port/"])
def test_cosign_refuses_a_witness_url_it_cannot_post_to(made: World, capsys: pytest.CaptureFixture[str], url: str) -> None:
    before = made.db.read_bytes()
    code, text = run(capsys, "audit", "cosign", "--db", str(made.db), "--witness-url", url)
    assert (code, text) == (2, f"audit cosign: --witness-url {url!r}: not an http(s) URL with a host")
    assert made.db.read_bytes() == before


def test_trust_refuses_what_verify_would_refuse_before_printing_a_trust_file(made: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(capsys, "audit", "trust", "--origin", "x", "--public-key", str(made.pub), "--witness-key", "garbage", "--quorum", "1")
    assert (code, text) == (2, "error: audit trust: verifier key 'garbage' is not name+hash+key")
    code, text = run(capsys, "audit", "trust", "--origin", "x", "--public-key", str(made.pub), "--quorum", "1")
    assert (code, text) == (2, "error: audit trust: quorum: 1 cosignatures required, 0 witnesses listed")


def test_plan_db_naming_a_ledger_with_records_is_a_usage_error(made: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "l.db"
    db.write_bytes(made.db.read_bytes())
    code, text = run(capsys, "plan", JOB, "--db", str(db), "--signing-key", str(made.key))
    assert code == 2 and text.startswith(f"error: {db}: already holds ") and text.endswith("records; plan writes a new ledger, pass a new path"), text
    assert db.read_bytes() == made.db.read_bytes()
