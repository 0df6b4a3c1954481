"""mcsched: a Ray-based multi-cloud scheduler that enforces a right-of-first-refusal contract."""

from scheduler.clock import Clock, ManualClock
from scheduler.decision import Decision
from scheduler.engine import Engine
from scheduler.errors import AdmissionError, LedgerCorrupt, MCSchedError, SpecError, SpecErrors
from scheduler.events import Event
from scheduler.model import Job
from scheduler.specs import CloudCatalog, Contract, JobDoc

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
