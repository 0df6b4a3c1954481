"""What-if baselines for the simulator, built from the engine's Policy parts (no branch in the core).

- ``contract``: what live scheduling does (the holder first, the contract's pins and spill ranking);
- ``cheapest``: ignores the contract (no ROFR, no pins, lowest price first): a cost lower
  bound that the contract's checker will count violations against;
- ``azure-only``: every class pinned to the holder, so nothing ever spills.
"""

from __future__ import annotations

from scheduler.pipeline.policy import Policy, price_first
from scheduler.specs import JOB_CLASSES, Contract

POLICIES = ("contract", "cheapest", "azure-only")


def policy_for(name: str, contract: Contract) -> Policy:
    if name == "contract":
        return Policy.from_contract(contract)
    if name == "cheapest":
        return Policy("cheapest", price_first, offer_holder_first=False, pins={})
    if name == "azure-only":
        base = Policy.from_contract(contract)
        return Policy("azure-only", base.rank, pins={cls: (contract.holder,) for cls in JOB_CLASSES})
    raise ValueError(f"unknown policy {name!r} (expected one of {', '.join(POLICIES)})")
