"""mcsched: a Ray-based multi-cloud scheduler that enforces a right-of-first-refusal contract.

The public names are imported on first use (PEP 562): ``python -m scheduler`` imports this
package before every command, and eager imports would make ``mcsched --help`` or
``mcsched env`` pay for pydantic's spec models and the engine they never use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.clock import Clock, ManualClock
    from scheduler.decision import Decision
    from scheduler.engine import Engine
    from scheduler.errors import AdmissionError, LedgerCorrupt, MCSchedError, SpecError, SpecErrors
    from scheduler.events import Event
    from scheduler.model import Job
    from scheduler.specs import CloudCatalog, Contract, JobDoc

#: Public name -> the module that defines it.
_PUBLIC = {
    "AdmissionError": "scheduler.errors",
    "Clock": "scheduler.clock",
    "CloudCatalog": "scheduler.specs",
    "Contract": "scheduler.specs",
    "Decision": "scheduler.decision",
    "Engine": "scheduler.engine",
    "Event": "scheduler.events",
    "Job": "scheduler.model",
    "JobDoc": "scheduler.specs",
    "LedgerCorrupt": "scheduler.errors",
    "MCSchedError": "scheduler.errors",
    "ManualClock": "scheduler.clock",
    "SpecError": "scheduler.errors",
    "SpecErrors": "scheduler.errors",
}

__all__ = [
    "AdmissionError",
    "Clock",
    "CloudCatalog",
    "Contract",
    "Decision",
    "Engine",
    "Event",
    "Job",
    "JobDoc",
    "LedgerCorrupt",
    "MCSchedError",
    "ManualClock",
    "SpecError",
    "SpecErrors",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
