"""The forgery corpus of issue 12: every edit is caught, whoever makes it.

Each forgery is a change to the recorded history. It is applied four ways: with raw SQL
on the file (the Merkle root no longer matches the signed checkpoint), as a full re-hash
signed with no key or with the attacker's own key (the signature fails), and as a full
re-hash signed with the real key by an insider (then the independent checker must name
the broken rule).
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.ledger import note
from scheduler.ledger.merkle import leaf_hash
from scheduler.ledger.verify import verify_ledger
from tests.builders import a_catalog, a_contract, a_job
from tests.ledger.forgery import CADENCES, Records, World, canonical, raw_sql, rehash


def world(tmp: Path, cadence: str = "per-operation") -> World:
    """A rich history: accept, declines, a preemption and re-placement, spot loss, an outage, a queue."""
    catalog = (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 8}}, price=3.4)
        .cloud("oci", {"ashburn": {"H100": 16, "H200": 8}, "phoenix": {"H100": 16}}, price=2.9, startup=60)
        .obj()
    )
    w = World(tmp, catalog, a_contract(), cadence)
    step = lambda fn: (w.clock.advance(10.0), w.op(fn))  # noqa: E731
    step(lambda e: e.submit(a_job().named("t1").gpus(8).priority(30).obj()))
    step(lambda e: e.submit(a_job().named("t2").gpus(8).regions("eastus", "ashburn").obj()))
    step(lambda e: e.submit(a_job().named("t3").gpus(8).obj()))
    step(lambda e: e.submit(a_job().named("api").cls("api-serving").gpus(8).priority(50).obj()))
    step(lambda e: e.set_capacity("oci", "ashburn", "H100", 8))
    step(lambda e: e.release("t2"))
    step(lambda e: e.submit(a_job().named("h1").sku("H200").gpus(8).obj()))
    step(lambda e: e.submit(a_job().named("q1").gpus(8).regions("eastus").obj()))
    step(lambda e: e.cancel("q1"))
    step(lambda e: e.set_backend("oci", up=False))
    step(lambda e: e.set_backend("oci", up=True))
    w.close()
    return w


@pytest.fixture(scope="module", params=CADENCES)
def pristine(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> World:
    """The same history signed every operation, and with the default writer's deferred checkpoints."""
    w = world(tmp_path_factory.mktemp("pristine"), request.param)
    assert w.verify().ok, w.verify().line()
    assert "not signed" not in w.verify().line()  # close() signed every record
    return w


def clone(pristine: World, tmp: Path) -> World:
    import shutil

    for name in ("ledger.db", "ledger-signing.key", "ledger-signing.pub", "ledger-mac.key"):
        shutil.copy(pristine.tmp / name, tmp / name)
    w = object.__new__(World)
    w.tmp, w.db, w.key, w.pub = tmp, tmp / "ledger.db", tmp / "ledger-signing.key", tmp / "ledger-signing.pub"
    return w


def at(recs: Records, kind: str, job: str | None = None, attempt: int | None = None, nth: int = 0) -> int:
    hits = [
        i
        for i, r in enumerate(recs)
        if r["kind"] == kind and (job is None or r.get("job") == job) and (attempt is None or r.get("attempt") == attempt)
    ]
    return hits[nth]


# ----------------------------------------------------------------------------- the forgeries


def reuse_old_decline(recs: Records) -> Records:
    """t3's re-placement after its eviction reuses attempt 1's decline: no new offer."""
    p = at(recs, "placed", "t3", 2)
    recs[p]["attempt"] = 1
    return [r for r in recs if not (r.get("job") == "t3" and r.get("attempt") == 2 and r["kind"] in ("offered", "answered", "quoted"))]


def lapse_lie(recs: Records) -> Records:
    """A 2 s lapse against a 30 s window while azure was up."""
    a = at(recs, "answered", "t2", 1)
    recs[a].update(answer="lapsed", reason="no-answer-within-window", response_seconds=2.0)
    recs[at(recs, "placed", "t2", 1)]["via"] = "after-lapse"
    return recs


def no_capacity_lie(recs: Records) -> Records:
    """`declined no-capacity` while azure had 8 free GPUs: t1 sent to oci instead."""
    recs[at(recs, "answered", "t1", 1)].update(answer="declined", reason="no-capacity")
    recs[at(recs, "placed", "t1", 1)].update(cloud="oci", region="phoenix", price=2.9, via="after-decline")
    return recs


def decline_from_oci(recs: Records) -> Records:
    recs[at(recs, "answered", "t2", 1)]["holder"] = "oci"
    return recs


def second_configured(recs: Records) -> Records:
    """A second configured record makes oci the holder; then an oci placement with no offer."""
    cfg = copy.deepcopy(recs[0])
    cfg["contract"]["spec"]["rofr"]["holder"] = "oci"
    cfg["contract"]["spec"]["pins"] = {"api-serving": ["oci"]}
    i = at(recs, "submitted", "h1")
    cfg["at"] = recs[i]["at"]  # in time order: the rule broken is the configuration one
    return [*recs[:i], cfg, *recs[i:]]


def low_priority_preemption(recs: Records) -> Records:
    """A pinned-job eviction of priority-30 t1 by a priority-0 inference job."""
    for r in recs:
        if r.get("job") == "api" and "cls" in r:
            r["cls"] = "inference"
        if r.get("job") == "api" and r["kind"] == "submitted":
            r["priority"] = r["spec"]["priority"] = 0
            r["spec"]["cls"] = "inference"
    return recs


def outside_regions(recs: Records) -> Records:
    recs[at(recs, "placed", "t2", 1)]["region"] = "phoenix"
    return recs


def gang_as_one_gpu(recs: Records) -> Records:
    """A 1024-GPU gang recorded as gpus=1."""
    s = at(recs, "submitted", "t2")
    recs[s]["spec"]["gpus"] = 1024
    recs[s]["gpus"] = 1
    recs[at(recs, "placed", "t2", 1)]["gpus"] = 1
    return recs


def false_not_offered(recs: Records) -> Records:
    """Rule 3: azure skipped for gpu-type-unavailable although it has H100."""
    a = at(recs, "answered", "t2", 1)
    recs[a].update(answer="not-offered", reason="gpu-type-unavailable", response_seconds=0.0)
    recs[at(recs, "placed", "t2", 1)]["via"] = "holder-not-offered"
    return [r for i, r in enumerate(recs) if not (r["kind"] == "offered" and r.get("job") == "t2")]


def spill_after_accept(recs: Records) -> Records:
    """Rule 5: azure accepted t1, yet it went to oci."""
    recs[at(recs, "placed", "t1", 1)].update(cloud="oci", region="phoenix", via="after-decline")
    return recs


def reconfigure_drops_pin(recs: Records) -> Records:
    """Rule 1: a reconfigured contract that lets api-serving off the holder."""
    contract = copy.deepcopy(recs[0]["contract"])
    contract["spec"]["pins"] = {"api-serving": ["azure", "oci"]}
    i = at(recs, "submitted", "h1")
    return [*recs[:i], {"kind": "reconfigured", "at": recs[i]["at"], "contract": contract, "reason": "x", "seq": 0}, *recs[i:]]


def outage_eviction_while_up(recs: Records) -> Records:
    """Rule 7: a backend-down eviction from a backend that is up (the outage record removed)."""
    i = at(recs, "backend-changed", None, nth=0)
    return recs[:i] + recs[i + 1 :]


def released_while_queued(recs: Records) -> Records:
    """Rule 8: q1 released (it was only queued)."""
    i = at(recs, "dequeued", "q1")
    recs[i] = {"kind": "released", "at": recs[i]["at"], "job": "q1", "cls": "training", "cloud": "azure", "region": "eastus",
               "gpu_type": "H100", "gpus": 8, "reason": "cancelled", "cost_usd": 0.0, "seq": 0, "prev": 0}
    return recs


def over_commit(recs: Records) -> Records:
    """Rule 6: t3 placed in ashburn after ashburn shrank (its re-placement moved there)."""
    recs[at(recs, "placed", "t3", 2)]["region"] = "ashburn"
    return recs


def reserved_for_running(recs: Records) -> Records:
    """Rule 9: a reservation for a running job."""
    i = at(recs, "placed", "t2", 1)
    res = {"kind": "reserved", "at": recs[i]["at"], "job": "t2", "cloud": "oci", "region": "phoenix", "gpu_type": "H100",
           "start_at": 0.0, "seq": 0, "prev": 0}
    return [*recs[:i + 1], res, *recs[i + 1:]]


def nudged_at(recs: Records) -> Records:
    """A time moved within its neighbours: every rule still holds, only the history differs."""
    i = next(k for k in range(1, len(recs) - 1) if recs[k - 1]["at"] < recs[k]["at"] < recs[k + 1]["at"])
    recs[i] = {**recs[i], "at": (recs[i - 1]["at"] + recs[i]["at"]) / 2}
    return recs


def edited_at(recs: Records) -> Records:
    recs[5]["at"] = 12345.0
    return recs


FORGERIES: list[tuple[str, Callable[[Records], Records], str]] = [
    ("reuse-old-decline", reuse_old_decline, "attempt"),
    ("lapse-lie", lapse_lie, "holder-answer"),
    ("no-capacity-lie", no_capacity_lie, "holder-answer"),
    ("decline-from-oci", decline_from_oci, "answer-not-holder"),
    ("second-configured", second_configured, "configuration"),
    ("low-priority-preemption", low_priority_preemption, "preemption"),
    ("outside-regions", outside_regions, "placement-mismatch"),
    ("gang-as-one-gpu", gang_as_one_gpu, "malformed-record"),
    ("false-not-offered", false_not_offered, "rofr-skipped"),
    ("spill-after-accept", spill_after_accept, "rofr-order"),
    ("reconfigure-drops-pin", reconfigure_drops_pin, "configuration"),
    ("outage-eviction-while-up", outage_eviction_while_up, "eviction"),
    ("released-while-queued", released_while_queued, "release-not-running"),
    ("over-commit", over_commit, "over-commit"),
    ("reserved-for-running", reserved_for_running, "reservation"),
]


def raw_rewrite(w: World, mutate: Callable[[Records], Records]) -> None:
    """The same change made with raw SQL: rows rewritten, checkpoints left alone."""
    recs = mutate(w.records())
    conn = sqlite3.connect(w.db)
    conn.close()
    raw_sql(w.db, "DELETE FROM records")
    conn = sqlite3.connect(w.db)
    conn.executemany("INSERT INTO records VALUES (?, ?, NULL)", [(i, canonical({**r, "seq": i})) for i, r in enumerate(recs, 1)])
    conn.commit()
    conn.close()


@pytest.mark.parametrize("name,mutate,rule", FORGERIES, ids=[f[0] for f in FORGERIES])
@pytest.mark.parametrize("attack", ["raw-sql", "rehash-no-key", "rehash-own-key", "insider-real-key"])
def test_every_forgery_fails_verify_with_one_line(pristine: World, tmp_path: Path, name: str, mutate: Any, rule: str, attack: str) -> None:
    w = clone(pristine, tmp_path)
    if attack == "raw-sql":
        raw_rewrite(w, mutate)
    else:
        rehash(w, mutate, {"rehash-no-key": "none", "rehash-own-key": "own", "insider-real-key": "real"}[attack])
    report = w.verify()
    line = report.line()
    assert not report.ok and line.startswith("FAIL: record ") and "\n" not in line, line
    if attack == "raw-sql":
        assert "do not match the signed checkpoint" in line or "not signed" in line or "missing" in line, line
    elif attack in ("rehash-no-key", "rehash-own-key"):
        assert "is not signed by the trusted key" in line, line
    else:
        assert report.rule.startswith(rule) or rule in line, line


def test_the_insider_forgery_is_also_caught_by_the_witnesses(pristine: World, tmp_path: Path) -> None:
    """Re-signed with the real key, the new history has no cosignature, and the witnesses refuse to cosign it."""
    from tests.ledger.forgery import a_witness

    w = clone(pristine, tmp_path)
    wits = {"w1": a_witness(tmp_path, "azure.example/w1"), "w2": a_witness(tmp_path, "azure.example/w2")}
    assert all(": cosigned checkpoint" in line for line in w.cosign(wits))
    trust = w.trust(witnesses=tuple(x.verifier for x in wits.values()), quorum=2)
    assert w.verify(trust=trust).ok, w.verify(trust=trust).line()
    rehash(w, nudged_at, "real")
    line = w.verify(trust=trust).line()
    assert "has 0 of the 2 witness cosignatures" in line, line
    assert all("refused (422" in line for line in w.cosign(wits))  # the fork is refused


# ----------------------------------------------------------------------------- integrity edits


def test_edited_at_is_caught(pristine: World, tmp_path: Path) -> None:
    w = clone(pristine, tmp_path)
    leaf = sqlite3.connect(w.db).execute("SELECT leaf FROM records WHERE seq = 6").fetchone()[0]
    raw_sql(w.db, "UPDATE records SET leaf = ? WHERE seq = 6", bytes(leaf).replace(b'"at":', b'"at":1', 1))
    line = w.verify().line()
    assert line.startswith("FAIL: record ") and "do not match the signed checkpoint" in line, line


@pytest.mark.parametrize(
    "sql,expect",
    [
        ("DELETE FROM records WHERE seq = 5", "missing"),
        ("UPDATE records SET seq = -seq WHERE seq IN (3, 4)", "missing"),
        # Past the last checkpoint a record is unsigned: a closed ledger fails on it by default.
        ("INSERT INTO records VALUES ((SELECT max(seq) + 1 FROM records), (SELECT leaf FROM records WHERE seq = 2), NULL)", "not signed"),
        ("DELETE FROM records WHERE seq > (SELECT max(seq) - 3 FROM records)", "missing"),
        ("DELETE FROM checkpoints WHERE id = (SELECT max(id) FROM checkpoints)", "not signed"),
        ("UPDATE checkpoints SET note = replace(note, CAST('=' || x'0a' AS BLOB), CAST('A' || x'0a' AS BLOB)) WHERE id = (SELECT max(id) FROM checkpoints)",
         "checkpoint unreadable"),
        ("UPDATE checkpoints SET note = CAST(replace(CAST(note AS TEXT), '— test.example/ledger ', '— test.example/ledger AAAA') AS BLOB)"
         " WHERE id = (SELECT max(id) FROM checkpoints)", "not signed by the trusted key"),
        ("UPDATE checkpoints SET size = size + 1 WHERE id = (SELECT max(id) FROM checkpoints)", "signed note says"),
        ("DELETE FROM records", "missing"),
    ],
    ids=["deleted", "renumbered", "inserted", "tail-records", "last-checkpoint-removed", "bad-note", "bad-signature", "size-column", "emptied"],
)
def test_raw_sql_edits_are_caught(pristine: World, tmp_path: Path, sql: str, expect: str) -> None:
    w = clone(pristine, tmp_path)
    raw_sql(w.db, sql)
    line = w.verify().line()
    assert line.startswith("FAIL: ") and expect in line and "\n" not in line, line


def test_an_appended_record_fails_by_default_and_is_checked_on_request(pristine: World, tmp_path: Path) -> None:
    w = clone(pristine, tmp_path)
    raw_sql(w.db, "INSERT INTO records VALUES ((SELECT max(seq) + 1 FROM records), (SELECT leaf FROM records WHERE seq = 2), NULL)")
    size = sqlite3.connect(w.db).execute("SELECT max(size) FROM checkpoints").fetchone()[0]
    line = w.verify().line()
    assert line.startswith(f"FAIL: record {size + 1}: 1 records after checkpoint {size} are not signed (records {size + 1}..{size + 1})"), line
    opted = w.verify(allow_unsigned_tail=True).line()  # checked anyway: the copy of record 2 is misnumbered
    assert opted.startswith(f"FAIL: record {size + 1}: record says it is number 2 (after the last signed checkpoint"), opted


def test_every_checkpoint_signature_is_checked_not_only_the_last(pristine: World, tmp_path: Path) -> None:
    """An intermediate checkpoint with a broken signature fails, though the last one is fine."""
    w = clone(pristine, tmp_path)
    conn = sqlite3.connect(w.db)
    cp_id, signed = conn.execute("SELECT id, note FROM checkpoints ORDER BY id LIMIT 1 OFFSET 2").fetchone()
    conn.close()
    text, sigs = note.split(bytes(signed))
    bad = note.Signature(sigs[0].name, sigs[0].kid, bytes(64))
    raw_sql(w.db, "UPDATE checkpoints SET note = ? WHERE id = ?", note.signed_note(text, bad), cp_id)
    line = w.verify().line()
    assert "is not signed by the trusted key" in line, line


def test_an_unsigned_checkpoint_in_the_chain_fails(pristine: World, tmp_path: Path) -> None:
    """A checkpoint with only a stranger's signature line (no signature by the log's key) sits in the chain: caught."""
    w = clone(pristine, tmp_path)
    conn = sqlite3.connect(w.db)
    cp_id, signed = conn.execute("SELECT id, note FROM checkpoints ORDER BY id LIMIT 1 OFFSET 1").fetchone()
    conn.close()
    text, _ = note.split(bytes(signed))
    stranger = note.sign(text, "someone.example/else", Ed25519PrivateKey.generate())
    raw_sql(w.db, "UPDATE checkpoints SET note = ? WHERE id = ?", note.signed_note(text, stranger), cp_id)
    assert "is not signed by the trusted key" in w.verify().line()


def test_reordered_records_are_caught(pristine: World, tmp_path: Path) -> None:
    w = clone(pristine, tmp_path)
    conn = sqlite3.connect(w.db)
    a, b = (bytes(x[0]) for x in conn.execute("SELECT leaf FROM records WHERE seq IN (7, 8) ORDER BY seq"))
    conn.close()
    raw_sql(w.db, "UPDATE records SET leaf = ? WHERE seq = 7", b)
    raw_sql(w.db, "UPDATE records SET leaf = ? WHERE seq = 8", a)
    assert "do not match the signed checkpoint" in w.verify().line()


def test_a_truncated_tail_is_caught_only_by_the_witnesses(pristine: World, tmp_path: Path) -> None:
    """Dropping the last operations with their checkpoints leaves a valid prefix: the witnesses cosigned more."""
    from tests.ledger.forgery import a_witness

    w = clone(pristine, tmp_path)
    wit = {"w1": a_witness(tmp_path, "azure.example/w1")}
    w.cosign(wit)
    trust = w.trust(witnesses=(wit["w1"].verifier,), quorum=1)
    conn = sqlite3.connect(w.db)
    sizes = [r[0] for r in conn.execute("SELECT size FROM checkpoints ORDER BY id")]
    conn.close()
    cut = sizes[-3]
    raw_sql(w.db, "DELETE FROM records WHERE seq > ?", cut)
    raw_sql(w.db, "DELETE FROM checkpoints WHERE size > ?", cut)
    assert w.verify().ok  # a prefix of a signed log is itself signed
    assert "has 0 of the 1 witness cosignatures" in w.verify(trust=trust).line()
    assert w.cosign(wit) == [f"witness w1: refused (400: rollback: size {cut} is below the cosigned {sizes[-1]})"]


def test_an_empty_ledger_fails(tmp_path: Path) -> None:
    from scheduler.ledger.signing import generate_key

    generate_key(tmp_path / "k.key")
    (tmp_path / "e.db").write_bytes(b"")
    import sqlite3 as sq

    sq.connect(tmp_path / "e.db").executescript(__import__("scheduler.ledger.store", fromlist=["SCHEMA"]).SCHEMA)
    line = verify_ledger(tmp_path / "e.db", tmp_path / "k.pub").line()
    assert line == "FAIL: record 1: no signed checkpoint: the ledger is empty or unsigned"


def test_a_ledger_signed_by_another_key_fails(pristine: World, tmp_path: Path) -> None:
    from scheduler.ledger.signing import generate_key

    generate_key(tmp_path / "other.key")
    line = pristine.verify(pub=tmp_path / "other.pub").line()
    assert "is not signed by the trusted key" in line, line


@pytest.mark.parametrize(
    "name,mutate",
    [
        ("empty-contract", lambda r: [{**r[0], "contract": {}}, *r[1:]]),
        ("spec-null", lambda r: [x if x["kind"] != "submitted" else {**x, "spec": None} for x in r]),
        ("gpus-string", lambda r: [x if x["kind"] != "placed" else {**x, "gpus": "8"} for x in r]),
        ("list-for-string", lambda r: [x if x["kind"] != "answered" else {**x, "reason": ["no-capacity"]} for x in r]),
        ("regions-string", lambda r: [x if x["kind"] != "submitted" else {**x, "spec": {**x["spec"], "regions": "eastus"}} for x in r]),
        ("unknown-kind", lambda r: [*r, {"kind": "teleported", "at": 0.0, "seq": 0}]),
        ("missing-field", lambda r: [{k: v for k, v in x.items() if k != "job"} if x["kind"] == "placed" else x for x in r]),
    ],
)
def test_rehashed_malformed_records_are_one_line(pristine: World, tmp_path: Path, name: str, mutate: Any) -> None:
    w = clone(pristine, tmp_path)
    rehash(w, mutate, "real")
    line = w.verify().line()
    assert line.startswith("FAIL: record ") and "malformed" in line and "\n" not in line, line


def test_leaf_hash_is_rfc9162() -> None:
    import hashlib

    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()


def test_time_running_backwards_is_caught_even_when_re_signed(pristine: World, tmp_path: Path) -> None:
    w = clone(pristine, tmp_path)

    def backwards(recs: Records) -> Records:
        i = len(recs) // 2
        recs[i] = {**recs[i], "at": recs[i - 1]["at"] - 5.0}
        return recs

    rehash(w, backwards, "real")
    line = w.verify().line()
    assert "time runs backwards" in line, line
