"""Which build of the placement core this process runs: mypyc-compiled extension modules, or Python.

``MCSCHED_COMPILE=1 pip install .`` builds the core as extension modules (setup.py); any other
install is the Python source. The answer comes from where the import system finds the core
(an extension module's file ends with one of ``EXTENSION_SUFFIXES``), not from any record of
the build, so it cannot disagree with what runs. Read by ``mcsched --version`` and the benchmarks.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

#: The module whose build stands for the core's (they are compiled together, or not at all).
PROBE = "scheduler.engine"


def is_compiled(module: str) -> bool:
    """Whether importing ``module`` loads (or loaded) an extension module; the module is not executed."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    return origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def core_build() -> str:
    """``compiled (mypyc)`` or ``Python source``, for ``mcsched --version`` and benchmark headers."""
    if is_compiled(PROBE):
        return "compiled (mypyc)"
    return "Python source (MCSCHED_COMPILE=1 pip install . builds the compiled core)"
