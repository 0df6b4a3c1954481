"""What-if policies the simulator compares against the contract, built from the engine's Policy parts.

- ``contract``: what live scheduling does (the holder first, the contract's pins and its
  spill ranking, ``spec.scoring.spill``);
- ``cheapest``: no ROFR, no pins, lowest list price first: what ignoring the contract would
  cost (its ledger fails ``audit verify`` by design, and the summary counts the breaches). It
  is *not* a cost floor: it ranks by price per GPU-hour only, ignoring start-up billing and
  waits, and a greedy choice per job is not the cheapest schedule;
- ``azure-only`` (holder only): the contract on a catalog that has the holder's clouds alone,
  so nothing can spill, while the contract's pins and preemption rule still apply by class
  (api-serving may preempt training and inference there).

They are values, not branches in the engine's core.
"""

from __future__ import annotations

from scheduler.clock import Clock
from scheduler.engine import Engine
from scheduler.errors import TraceError
from scheduler.pipeline.policy import Policy, price_first
from scheduler.specs import CloudCatalog, Contract

POLICIES = ("contract", "cheapest", "azure-only")
#: what each policy is, in the words the report uses
DESCRIPTIONS = {
    "contract": "the contract as live scheduling applies it (ROFR, pins, preemption, spill ranking)",
    "cheapest": "baseline without the contract: no ROFR, no pins, lowest list price first (not a cost floor: "
                "start-up billing and waits are not in its ranking, and greedy per-job choices are not the cheapest schedule)",
    "azure-only": "baseline on the holder alone: the contract with every other cloud removed (pins and preemption still apply by class)",
}


def parse_policies(spec: str) -> list[str]:
    """``contract,cheapest,azure-only`` -> the list, each known and once."""
    names = [p.strip() for p in spec.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown or not names:
        raise TraceError(f"--policy: unknown policy {unknown[0] if unknown else spec!r} (expected one or more of {', '.join(POLICIES)})")
    if len(set(names)) != len(names):
        raise TraceError(f"--policy: {spec!r} names a policy twice")
    return names


def policy_for(name: str, contract: Contract) -> Policy:
    if name == "contract":
        return Policy.from_contract(contract)
    if name == "cheapest":
        return Policy("cheapest", price_first, offer_holder_first=False, pins={})
    if name == "azure-only":
        base = Policy.from_contract(contract)
        return Policy("azure-only", base.rank)
    raise TraceError(f"--policy: unknown policy {name!r} (expected one of {', '.join(POLICIES)})")


def catalog_for(name: str, catalog: CloudCatalog, contract: Contract) -> CloudCatalog:
    """The catalog a policy runs on: ``azure-only`` keeps the holder's backend alone, the others all of it."""
    if name != "azure-only":
        return catalog
    backends = [b for b in catalog.spec.backends if b.name == contract.holder]
    return catalog.model_copy(update={"spec": catalog.spec.model_copy(update={"backends": backends})})


def with_holder_declines(catalog: CloudCatalog, holder: str, fraction: float, seed: int) -> CloudCatalog:
    """The catalog with the holder declining ``fraction`` of the offers it has room for (``--holder-decline-rate``),
    drawn from ``seed``: its ``holderRules.declineFraction`` and ``declineSeed``, so the ledger's configured record says so."""
    if not 0.0 <= fraction <= 1.0:
        raise TraceError(f"--holder-decline-rate: {fraction:g}: must be a share between 0 and 1")
    backends = [
        b.model_copy(update={"holderRules": b.holderRules.model_copy(update={"declineFraction": fraction, "declineSeed": seed})})
        if b.name == holder else b
        for b in catalog.spec.backends
    ]
    return catalog.model_copy(update={"spec": catalog.spec.model_copy(update={"backends": backends})})


def build_engine(catalog: CloudCatalog, contract: Contract, clock: Clock, policy: str) -> Engine:
    """The engine for ``policy`` (``catalog`` already the policy's: see ``catalog_for``)."""
    return Engine(catalog, contract, clock, policy=policy_for(policy, contract))


def spill_ranking(contract: Contract, policy: str) -> str:
    """How quotes are ranked after the holder declines or lapses, in words for the report."""
    if policy == "cheapest":
        return "price-first (the cheapest baseline offers nothing to the holder first: every cloud competes on price)"
    if policy == "azure-only":
        return "none (the holder is the only cloud: nothing spills; the contract's pins and preemption apply by class)"
    scoring = contract.spec.scoring
    if scoring.spill == "weighted":
        w = scoring.weights
        return f"weighted (the contract's spec.scoring: {w.price:g} x USD/GPU-h + {w.startSeconds:g} x seconds to start, lowest first)"
    if scoring.spill == "start-first":
        return "start-first (the contract's spec.scoring.spill: earliest start, then price)"
    return "price-first (the contract's spec.scoring.spill, the default: lowest price, then earliest start)"
