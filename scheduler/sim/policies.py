"""What-if policies the simulator compares against the contract.

- ``contract``: the contract as live scheduling applies it.
- ``cheapest``: no ROFR, no pins, lowest price first: what ignoring the contract would cost
  (its ledger fails ``audit verify`` by design, and the summary counts the breaches).
- ``azure-only``: every class pinned to the holder: nothing ever spills.

They are values built here, not branches in the engine's core.
"""

from __future__ import annotations

from scheduler.clock import Clock
from scheduler.engine import Engine
from scheduler.errors import TraceError
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


def policy_contract(contract: Contract, policy: str) -> Contract:
    """The contract a policy runs under (``azure-only`` pins every class to the holder)."""
    if policy != "azure-only":
        return contract
    pins = {cls: [contract.holder] for cls in JOB_CLASSES}
    spec = contract.spec.model_copy(update={"pins": pins})
    return contract.model_copy(update={"spec": spec})


def build_engine(catalog: CloudCatalog, contract: Contract, clock: Clock, policy: str) -> Engine:
    if policy not in POLICIES:
        raise TraceError(f"--policy: unknown policy {policy!r} (expected one of {', '.join(POLICIES)})")
    return Engine(catalog, policy_contract(contract, policy), clock, policy="cheapest" if policy == "cheapest" else "contract")


def spill_ranking(contract: Contract, policy: str) -> str:
    """How quotes are ranked after the holder declines or lapses, in words for the report."""
    if policy == "cheapest":
        return "price-first (the cheapest baseline offers nothing to the holder first: every cloud competes on price)"
    if policy == "azure-only":
        return "none (every class is pinned to the holder: nothing spills)"
    return "start-first (engine v1: earliest start, then price; the contract's spec.scoring.spill arrives with engine v2)"
