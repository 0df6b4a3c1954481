"""Where the shared real traces are, if they are here at all (tests that need them skip with why)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _find_traces() -> Path:
    """``$MCSCHED_TRACES``, else ``shared/traces`` beside the checkout or beside any parent (worktrees)."""
    env = os.environ.get("MCSCHED_TRACES")
    if env:
        return Path(env)
    for parent in ROOT.parents:
        candidate = parent / "shared" / "traces"
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "traces"


TRACES = _find_traces()
needs_traces = pytest.mark.skipif(
    not TRACES.is_dir(), reason=f"{TRACES} is absent (the shared traces are not checked out beside the project; set MCSCHED_TRACES)"
)
