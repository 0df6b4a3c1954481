"""The contract's commercial clauses (issue 27, problem 5): a spill goes to the best quote in
the contract's ranking, at the quoted price from the pinned catalog; offers name the window.

Histories rewritten by an insider with the real key (every Merkle root and signature valid)
that break only these clauses must fail ``audit verify`` and ``check-proof``; honest
ledgers of random worlds under every ranking must pass."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.ledger.clauses import ClauseChecker, ClauseViolation
from scheduler.ledger.proofs import check_proof, prove
from scheduler.ledger.signing import load_public_key, log_verifier
from scheduler.specs import Contract
from tests.builders import a_catalog, a_contract, a_job
from tests.ledger.forgery import ORIGIN, Records, World, rehash
from tests.strategies import catalogs, contracts, jobs, ops


def ranked(contract: Contract, spill: str, price: float = 1.0, start: float = 0.0) -> Contract:
    doc = contract.model_dump(mode="json", by_alias=True)
    doc["spec"]["scoring"] = {"spill": spill, "weights": {"price": price, "startSeconds": start}}
    return Contract.model_validate(doc)


def three_clouds() -> Any:
    """The holder and two competitors: oci cheaper but slower to start, stargate dearer and quicker."""
    return (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 8}}, price=3.4)
        .cloud("oci", {"phoenix": {"H100": 64}}, price=2.9, startup=120)
        .cloud("stargate", {"abilene": {"H100": 64}}, price=3.1, startup=10)
        .obj()
    )


def spilled_world(tmp_path: Any, spill: str = "price-first") -> World:
    w = World(tmp_path, three_clouds(), ranked(a_contract(), spill))
    w.op(lambda e: e.submit(a_job().named("fill").gpus(8).obj()))  # azure is full: the next job spills
    w.op(lambda e: e.submit(a_job().named("spill").gpus(8).obj()))
    w.close()
    return w


def at(recs: Records, kind: str, job: str) -> int:
    return next(i for i, r in enumerate(recs) if r["kind"] == kind and r.get("job") == job)


def placed_on(w: World, job: str) -> str:
    return w.records()[at(w.records(), "placed", job)]["cloud"]


@pytest.mark.parametrize(("spill", "winner"), [("price-first", "oci"), ("start-first", "stargate")])
def test_an_honest_spill_verifies_under_each_ranking(tmp_path: Any, spill: str, winner: str) -> None:
    w = spilled_world(tmp_path, spill)
    assert placed_on(w, "spill") == winner
    report = w.verify()
    assert report.ok, report.line()


def to_the_dearer_quote(recs: Records) -> Records:
    """The spill moved to stargate (quoted, but ranked second under price-first) at stargate's own quote."""
    recs[at(recs, "placed", "spill")].update(cloud="stargate", region="abilene", price=3.1)
    return recs


def price_inflated(recs: Records) -> Records:
    """The right cloud, billed above its quote."""
    recs[at(recs, "placed", "spill")]["price"] = 3.3
    return recs


def quote_off_catalog(recs: Records) -> Records:
    """oci's quote and the bill both raised above the pinned catalog's price (consistent with each other)."""
    q = at(recs, "quoted", "spill")
    recs[q]["quotes"] = [[c, r, 3.3 if c == "oci" else p, s] for c, r, p, s in recs[q]["quotes"]]
    recs[at(recs, "placed", "spill")]["price"] = 3.3
    return recs


def cheaper_quote_dropped(recs: Records) -> Records:
    """oci's (best) quote erased from the record, and the spill sent to stargate."""
    q = at(recs, "quoted", "spill")
    recs[q]["quotes"] = [x for x in recs[q]["quotes"] if x[0] != "oci"]
    recs[at(recs, "placed", "spill")].update(cloud="stargate", region="abilene", price=3.1)
    return recs


def accepted_above_catalog(recs: Records) -> Records:
    """The holder's own placement billed above its catalog price."""
    recs[at(recs, "placed", "fill")]["price"] = 9.9
    return recs


def wider_window(recs: Records) -> Records:
    """An offer that gave the holder more time than the contract's window."""
    recs[at(recs, "offered", "spill")]["window_seconds"] = 3600.0
    return recs


LAUNDERED = [
    ("to-the-dearer-quote", to_the_dearer_quote, "spill-ranking", "ranks first under the contract's price-first ranking"),
    ("price-inflated", price_inflated, "price", "its quote from oci is $2.9"),
    ("quote-off-catalog", quote_off_catalog, "price", "the catalog says $2.9"),
    ("cheaper-quote-dropped", cheaper_quote_dropped, "spill-ranking", "without a quote or a reason from oci"),
    ("accepted-above-catalog", accepted_above_catalog, "price", "azure's catalog price is $3.4"),
]
#: For one job's proof (no whole-ledger checker behind it): the same, and the offer's window.
IN_PROOF = [*LAUNDERED[:4], ("wider-window", wider_window, "offer-window", "the contract says 30s")]


@pytest.mark.parametrize(("name", "mutate", "rule", "why"), LAUNDERED, ids=[x[0] for x in LAUNDERED])
def test_an_insider_rewrite_that_breaks_a_clause_fails_verify(tmp_path: Any, name: str, mutate: Any, rule: str, why: str) -> None:
    w = spilled_world(tmp_path)
    rehash(w, mutate, "real")  # every root and signature valid: only the clauses can tell
    report = w.verify()
    assert not report.ok and report.rule == rule and why in report.reason, report.line()


@pytest.mark.parametrize(("name", "mutate", "rule", "why"), IN_PROOF, ids=[x[0] for x in IN_PROOF])
def test_check_proof_checks_the_same_clauses_for_one_job(tmp_path: Any, name: str, mutate: Any, rule: str, why: str) -> None:
    w = spilled_world(tmp_path)
    log = log_verifier(ORIGIN, load_public_key(w.pub))
    assert check_proof(prove(w.db, "spill"), log).ok
    rehash(w, mutate, "real")
    result = check_proof(prove(w.db, "spill"), log)
    assert not result.ok and f"{rule}: " in result.line and why in result.line, result.line


def feed(checker: ClauseChecker, events: list[Any]) -> None:
    for ev in events:
        checker.check(ev.kind, ev)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    data=st.data(),
    catalog=catalogs(),
    contract=contracts(),
    spill=st.sampled_from(["price-first", "start-first", "weighted"]),
    weights=st.tuples(st.sampled_from([0.0, 1.0, 2.5]), st.sampled_from([0.0, 0.01, 1.0])),
)
def test_honest_random_worlds_keep_every_clause(data: st.DataObject, catalog: Any, contract: Contract, spill: str, weights: Any) -> None:
    """The engine's own decisions, under every ranking, never break a clause (no false alarms)."""
    clock = ManualClock()
    engine = Engine(catalog, ranked(contract, spill, *weights), clock)
    checker = ClauseChecker()
    events: list[Any] = []
    engine.subscribe(events.append)
    engine.announce()
    for i, (op, arg) in enumerate(data.draw(st.lists(ops(catalog), min_size=10, max_size=40), label="ops")):
        if op == "submit":
            job = data.draw(jobs(f"j{i}", catalog))
            with contextlib.suppress(AdmissionError):  # a refused job changes nothing
                engine.submit(job)
        elif op in ("release", "cancel"):
            live = sorted(n for n, r in engine.jobs.items() if r.state in (("running",) if op == "release" else ("running", "queued")))
            if live:
                name = live[arg % len(live)]
                engine.release(name) if op == "release" else engine.cancel(name)
        elif op == "backend":
            engine.set_backend(arg[0], up=arg[1], extra_latency_seconds=arg[2])
        elif op == "capacity":
            (cloud, region, sku), cap = arg
            engine.set_capacity(cloud, region, sku, cap)
        else:
            clock.advance(arg)
        try:
            feed(checker, events)
        except ClauseViolation as v:  # pragma: no cover - the failure message
            pytest.fail(f"{v.rule}: {v.message}")
        events.clear()


def test_check_proof_with_a_trust_file_refuses_a_contract_it_does_not_pin(tmp_path: Any) -> None:
    """The proof's contract comes from the ledger under test: the trust file must pin it (a swapped holder is refused)."""
    import math

    from scheduler.ledger.trust import Pin, doc_hash

    w = spilled_world(tmp_path)
    doc = prove(w.db, "spill")
    pinned = ranked(a_contract(), "price-first").model_dump(mode="json", by_alias=True)
    catalog = three_clouds().model_dump(mode="json", by_alias=True)
    trust = w.trust(contracts=(Pin(doc_hash(pinned), -math.inf, math.inf),), catalogs=(Pin(doc_hash(catalog), -math.inf, math.inf),))
    assert check_proof(doc, trust.log, pins=trust).ok
    swapped = ranked(a_contract(holder="oci"), "price-first").model_dump(mode="json", by_alias=True)
    other = w.trust(contracts=(Pin(doc_hash(swapped), -math.inf, math.inf),))
    result = check_proof(doc, other.log, pins=other)
    assert not result.ok and "trust: contract sha256" in result.line and "is not in the trust file" in result.line, result.line
