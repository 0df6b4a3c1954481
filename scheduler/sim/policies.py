"""What-if policies the simulator compares against the contract, built from the engine's Policy parts.

- ``contract``: what live scheduling does (the holder first, the contract's pins and its
  spill ranking, ``spec.scoring.spill``);
- ``cheapest``: no ROFR, no pins, lowest price first: what ignoring the contract would cost
  (its ledger fails ``audit verify`` by design, and the summary counts the breaches);
- ``azure-only``: every class pinned to the holder, so nothing ever spills.

They are values, not branches in the engine's core.
"""

from __future__ import annotations

from scheduler.clock import Clock
from scheduler.engine import Engine
from scheduler.errors import TraceError
from scheduler.pipeline.policy import Policy, price_first
from scheduler.specs import JOB_CLASSES, CloudCatalog, Contract

POLICIES = ("contract", "cheapest", "azure-only")


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
        return Policy("azure-only", base.rank, pins={cls: (contract.holder,) for cls in JOB_CLASSES})
    raise TraceError(f"--policy: unknown policy {name!r} (expected one of {', '.join(POLICIES)})")


def build_engine(catalog: CloudCatalog, contract: Contract, clock: Clock, policy: str) -> Engine:
    return Engine(catalog, contract, clock, policy=policy_for(policy, contract))


def spill_ranking(contract: Contract, policy: str) -> str:
    """How quotes are ranked after the holder declines or lapses, in words for the report."""
    if policy == "cheapest":
        return "price-first (the cheapest baseline offers nothing to the holder first: every cloud competes on price)"
    if policy == "azure-only":
        return "none (every class is pinned to the holder: nothing spills)"
    scoring = contract.spec.scoring
    if scoring.spill == "weighted":
        w = scoring.weights
        return f"weighted (the contract's spec.scoring: {w.price:g} x USD/GPU-h + {w.startSeconds:g} x seconds to start, lowest first)"
    if scoring.spill == "start-first":
        return "start-first (the contract's spec.scoring.spill: earliest start, then price)"
    return "price-first (the contract's spec.scoring.spill, the default: lowest price, then earliest start)"
