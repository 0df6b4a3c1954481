"""One job's proof: made from the ledger, checked without it, and no byte of it can change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.ledger.note import Verifier
from scheduler.ledger.proofs import check_proof, prove
from scheduler.ledger.signing import load_public_key, log_verifier
from tests.builders import a_job, two_clouds
from tests.ledger.forgery import ORIGIN, World


def log_of(w: World) -> Verifier:
    return log_verifier(ORIGIN, load_public_key(w.pub))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, dict]:
    w = World(tmp_path_factory.mktemp("proof"), two_clouds(azure_h100=8))
    w.op(lambda e: e.submit(a_job().named("first").gpus(8).obj()))
    w.op(lambda e: e.submit(a_job().named("spill").gpus(8).obj()))
    w.op(lambda e: e.submit(a_job().named("api").cls("api-serving").gpus(8).priority(50).obj()))
    w.op(lambda e: e.release("spill"))
    w.close()
    return w, prove(w.db, "spill")


def test_a_proof_round_trips_and_tells_the_rofr_story(made: tuple[World, dict]) -> None:
    w, doc = made
    result = check_proof(json.loads(json.dumps(doc)), log_of(w))
    assert result.ok, result.line
    assert result.line.startswith("OK: spill: ") and "offered to azure first (declined no-capacity), placed on oci" in result.line
    kinds = [json.loads(r["record"])["kind"] for r in doc["records"]]
    assert kinds[0] == "configured" and "offered" in kinds and kinds[-1] == "released"


def test_a_proof_for_a_preempted_job_shows_every_attempt(made: tuple[World, dict]) -> None:
    w, _ = made
    result = check_proof(prove(w.db, "first"), log_of(w))
    assert result.ok and "attempt 1: offered to azure first (accepted accepted)" in result.line and "attempt 2" in result.line


def test_another_key_and_an_unknown_job_fail(made: tuple[World, dict], tmp_path: Path) -> None:
    from scheduler.errors import LedgerError
    from scheduler.ledger.signing import generate_key

    w, doc = made
    other = generate_key(tmp_path / "o.key").public_key()
    assert "does not verify with the trusted key" in check_proof(doc, log_verifier(ORIGIN, other)).line
    assert "is for origin" in check_proof(doc, log_verifier("fork.example/ledger", load_public_key(w.pub))).line
    with pytest.raises(LedgerError, match="no job"):
        prove(w.db, "nobody")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_altered_byte_fails(made: tuple[World, dict], data: st.DataObject) -> None:
    w, doc = made
    raw = json.dumps(doc).encode()
    # change one byte inside a value that matters: a record, a path hash, the checkpoint or its signature
    i = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    forged = raw[:i] + bytes([new]) + raw[i + 1 :]
    try:
        parsed = json.loads(forged)
    except ValueError:
        return  # not JSON any more: the CLI says so (test_cli_check_proof_never_tracebacks)
    if parsed == doc:
        return  # the byte was insignificant JSON whitespace or an equivalent escape
    result = check_proof(parsed, log_of(w))
    assert not result.ok and result.line.startswith("FAIL: "), (i, forged[max(0, i - 30) : i + 30])


def test_a_consistency_proof_ties_an_older_checkpoint_to_the_latest(made: tuple[World, dict]) -> None:
    import sqlite3

    w, _ = made
    sizes = [r[0] for r in sqlite3.connect(w.db).execute("SELECT size FROM checkpoints WHERE size > 0 ORDER BY id")]
    doc = prove(w.db, "spill", since=sizes[1])
    result = check_proof(doc, log_of(w))
    assert result.ok and f"extends the checkpoint of size {sizes[1]}" in result.line, result.line
    doc["consistency"]["proof"][0] = "00" * 32
    assert "does not extend" in check_proof(doc, log_of(w)).line


def test_a_proof_must_extend_the_checkpoint_the_auditor_holds(made: tuple[World, dict]) -> None:
    """``--since`` no longer trusts the suspect file's own old checkpoint: the auditor's held one must match."""
    import sqlite3

    from scheduler.ledger.signing import parse_checkpoint

    w, _ = made
    rows = sqlite3.connect(w.db).execute("SELECT size, note FROM checkpoints WHERE size > 0 ORDER BY id").fetchall()
    held = parse_checkpoint(bytes(rows[1][1]))
    other = parse_checkpoint(bytes(rows[2][1]))
    assert check_proof(prove(w.db, "spill", since=held.size), log_of(w), held).ok
    line = check_proof(prove(w.db, "spill", since=other.size), log_of(w), held).line
    assert "not the one you hold" in line, line
    assert "no consistency proof from the checkpoint you hold" in check_proof(prove(w.db, "spill"), log_of(w), held).line


def test_a_proof_that_omits_one_of_the_jobs_records_fails(made: tuple[World, dict]) -> None:
    """Each job record names the job's previous one: leaving one out (a decline, say) breaks the chain."""
    w, doc = made
    job_items = [i for i, r in enumerate(doc["records"]) if json.loads(r["record"]).get("job") == "spill"]
    for i in job_items[1:-1]:
        cut = {**doc, "records": [r for k, r in enumerate(doc["records"]) if k != i]}
        line = check_proof(cut, log_of(w)).line
        assert line.startswith("FAIL: record ") and "which the proof leaves out" in line, line


def test_check_proof_checks_the_api_serving_pin(tmp_path: Path) -> None:
    """An insider re-signs a history where an api-serving job ran off the holder: the proof says no."""
    from tests.ledger.forgery import rehash

    w = World(tmp_path, two_clouds(azure_h100=8))
    w.op(lambda e: e.submit(a_job().named("api").cls("api-serving").gpus(8).obj()))
    w.close()

    def moved(recs: list[dict]) -> list[dict]:
        out = []
        for r in recs:
            if r.get("job") == "api" and r["kind"] == "placed":
                r = {**r, "cloud": "oci", "region": "ashburn", "via": "spill"}
            elif r.get("job") == "api" and r["kind"] == "answered":
                r = {**r, "answer": "declined", "reason": "no-capacity"}
            out.append(r)
        return out

    rehash(w, moved, "real")
    line = check_proof(prove(w.db, "api"), log_of(w)).line
    assert "a api-serving job placed on oci, but the contract pins api-serving to azure" in line, line
