"""A clone alone is green: without ``../shared`` beside it, the tests that need its data skip
with a reason and everything else passes. (With it, the same tests run in the suite itself.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.shared import ABSENT, ROOT


def users_of_shared() -> list[str]:
    """Test modules that read ../shared (they import tests.shared or tests.sim.shared)."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.name != "test_clone_alone.py" and re.search(r"^from tests(\.sim)?\.shared import", p.read_text(), re.M)
    )


@pytest.mark.slow  # runs part of the suite again in a subprocess
def test_without_shared_the_tests_that_need_it_skip_with_a_reason_and_the_rest_pass(tmp_path) -> None:
    modules = users_of_shared()
    assert len(modules) >= 4, modules  # manifests (CRDs), faults (spot), sim traces, simulator
    env = {k: v for k, v in os.environ.items() if k != "MCSCHED_TRACES"}
    env["MCSCHED_SHARED_DIR"] = str(tmp_path / "no-shared")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *modules],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    summary = r.stdout.strip().splitlines()[-1]
    skipped = int(m.group(1)) if (m := re.search(r"(\d+) skipped", summary)) else 0
    assert skipped >= 8 and " passed" in summary, summary
    skip_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert skip_lines and all(ABSENT in ln for ln in skip_lines), "\n".join(skip_lines)
