"""Running one script under both builds of the core: compiled (where installed) and its Python source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scheduler import native

ROOT = Path(__file__).resolve().parents[1]


def run_both_builds(script: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON each build's run of ``script`` prints (it must print ``{"build": core_build(), ...}``),
    compiled first; checks that each run used the build it was meant to. Call with MCSCHED_PURE_PYTHON unset."""
    base = {**os.environ, **(env or {})}
    base.pop(native.PURE_ENV, None)
    compiled, source = (
        json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=e, capture_output=True, text=True, check=True).stdout)
        for e in (base, {**base, native.PURE_ENV: "1"})
    )
    assert source["build"].startswith("Python source")
    if native.stale_reason() is None and native.STAMP.exists():
        assert compiled["build"] == "compiled (mypyc)"
    return compiled, source
