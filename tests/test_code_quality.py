"""The core stays pure and typed: checked in CI, not by convention alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ["engine", "backends", "inventory", "events", "model", "specs", "loading", "decision", "clock"]
CORE += [str(p.relative_to(ROOT / "scheduler").with_suffix("")) for d in ("core", "pipeline", "invariants", "io") for p in sorted((ROOT / "scheduler" / d).rglob("*.py"))]
FORBIDDEN = {"ray", "prometheus_client", "sqlite3", "time", "kubernetes"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_ray_prometheus_sqlite_or_wall_clock() -> None:
    for name in CORE:
        bad = imported_modules(ROOT / "scheduler" / f"{name}.py") & FORBIDDEN
        assert not bad, f"scheduler/{name}.py imports {bad}"


def test_ruff_is_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "scheduler", "tests", "benchmarks", "setup.py", "_build_backend"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_passes_on_the_package() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_import_is_declared_and_every_dependency_used() -> None:
    """deptry ([tool.deptry]): no missing import (DEP001), none satisfied only through another
    package's dependency (DEP003), no declared dependency unused (DEP002)."""
    deptry = Path(sys.executable).with_name("deptry")
    r = subprocess.run([str(deptry), "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_installed_dependencies_are_consistent() -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_collecting_the_tests_imports_no_ray() -> None:
    """Ray reads its authentication settings once, when first imported: a test module that imports
    it at collection freezes token mode off for the whole run, and every later test that joins
    a token-protected cluster fails (seen only in a full run, never one file at a time)."""
    code = (
        "import sys, pytest\n"
        "rc = pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests'])\n"
        "print('RAY-IMPORTED' if 'ray' in sys.modules else 'RAY-NOT-IMPORTED', rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "RAY-NOT-IMPORTED 0" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
