"""Where mcsched finds its shipped examples and keeps its local state."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def examples_dir() -> Path:
    """The shipped examples: ``$MCSCHED_EXAMPLES``, else the copy an installed package carries
    (``scheduler/examples``, package data built from ``deploy/examples``), else the checkout's
    ``deploy/examples`` (a source checkout or an editable install, where they are not copied)."""
    env = os.environ.get("MCSCHED_EXAMPLES")
    if env:
        return Path(env)
    packaged = PACKAGE_DIR / "examples"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "deploy" / "examples"


def default_catalog() -> Path:
    return examples_dir() / "catalog.yaml"


def default_contract() -> Path:
    return examples_dir() / "contract.yaml"


def state_dir() -> Path:
    """Local state (ledger, Ray temp dir, pid files): ``$MCSCHED_HOME`` or ``~/.mcsched``."""
    return Path(os.environ.get("MCSCHED_HOME", str(Path.home() / ".mcsched")))
