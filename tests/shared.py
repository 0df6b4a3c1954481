"""Where the tests find ``../shared`` (vendored CRD schemas, real traces).

It lies beside the clone in this repository's home and in CI (or beside a parent directory,
for git worktrees); a clone elsewhere has none, and the tests that need it skip with a
reason. ``MCSCHED_SHARED_DIR`` points elsewhere (or at an empty directory, to check that a
clone alone is green).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    """``$MCSCHED_SHARED_DIR``, else ``shared`` beside the clone or beside one of its parents (worktrees)."""
    env = os.environ.get("MCSCHED_SHARED_DIR")
    if env:
        return Path(env)
    for parent in ROOT.parents:
        if (parent / "shared").is_dir():
            return parent / "shared"
    return ROOT.parent / "shared"


SHARED = _find_shared()
ABSENT = "is absent: ../shared is not beside this clone (set MCSCHED_SHARED_DIR to use another copy)"


def shared(*parts: str) -> Path:
    return SHARED.joinpath(*parts)


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """Skip (with the path in the reason) when this part of ``../shared`` is absent."""
    path = shared(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} {ABSENT}")
