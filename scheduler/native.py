"""Which build of the placement core this process runs: compiled by mypyc, or its Python source.

The pure core (engine, queue, inventory, pipeline stages) is plain, strictly typed Python.
``pip install`` also compiles it with mypyc (``setup.py``) when a C compiler is there, for
about twice the decisions per second; without one it installs as Python, and nothing else
changes. A compiled module sits beside its source and Python imports it first, so an
in-place (editable) build goes stale the moment a core file is edited: the build records a
digest of the sources it compiled (``native.stamp``), and when the sources no longer match it,
or ``MCSCHED_PURE_PYTHON=1`` asks for it, every core module is imported from its source
instead, all together (a compiled module calls its compiled neighbours directly).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
#: The modules mypyc compiles: the pure core, which imports no Ray, Prometheus or SQLite, and the
#: two that run beside it on every event of a replay (the contract's checker, the simulation loop).
CORE_MODULES = (
    "scheduler.engine",
    "scheduler.queue",
    "scheduler.inventory",
    "scheduler.backends",
    "scheduler.clock",
    "scheduler.pipeline.admit",
    "scheduler.pipeline.backfill",
    "scheduler.pipeline.offer",
    "scheduler.pipeline.policy",
    "scheduler.pipeline.preempt",
    "scheduler.pipeline.quote",
    "scheduler.invariants",
    "scheduler.sim.simulator",
)
STAMP = PACKAGE_DIR / "native.stamp"
PURE_ENV = "MCSCHED_PURE_PYTHON"


def source_path(module: str, root: Path = PACKAGE_DIR.parent) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_digest(root: Path = PACKAGE_DIR.parent) -> str:
    """A digest of the core's sources: what a compiled build was made from."""
    digest = hashlib.sha256()
    for module in CORE_MODULES:
        digest.update(module.encode())
        digest.update(source_path(module, root).read_bytes())
    return digest.hexdigest()


def _compiled_file(module: str) -> Path | None:
    base = source_path(module).with_suffix("")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.exists():
            return candidate
    return None


def stale_reason(root: Path = PACKAGE_DIR.parent) -> str | None:
    """Why the compiled core under ``root`` must not be used (None: it may be, where it was built)."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    try:
        recorded = (root / PACKAGE_DIR.name / STAMP.name).read_text().split()[0]
    except (OSError, IndexError):
        return "no build stamp"
    if recorded != source_digest(root):
        return "the core's sources changed since it was compiled (pip install -e . rebuilds it)"
    return None


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the core modules' ``.py`` files even where a compiled module sits beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in CORE_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def _sources_forced() -> bool:
    return any(isinstance(f, _SourceFinder) for f in sys.meta_path)


def select() -> None:
    """Called once as the package is imported, before any core module is."""
    if not any(_compiled_file(m) for m in CORE_MODULES):
        return  # nothing compiled here: Python imports the sources anyway
    if stale_reason() is not None and not _sources_forced():
        sys.meta_path.insert(0, _SourceFinder())


def core_build() -> str:
    """What runs (or, before the engine is imported, will run) the core in this process, for
    benchmarks and ``mcsched --version``."""
    built = _compiled_file("scheduler.engine") is not None
    engine = sys.modules.get("scheduler.engine")
    # not imported yet: what the import would load (a compiled module beside its source wins, unless the finder is in)
    compiled = not (engine.__file__ or "").endswith(".py") if engine is not None else built and not _sources_forced()
    if compiled:
        return "compiled (mypyc)"
    if not built:
        return "Python source (not compiled: no C compiler at install, or MCSCHED_NATIVE=0)"
    return f"Python source ({stale_reason() or 'compiled core not loaded'})"
