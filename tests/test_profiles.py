"""The quick profile (``pytest -m "not slow"``) and the full run's first part (``-m "not serial"``,
on both cores) start no Ray and no Prometheus: the watcher in tests/conftest.py fails a test
that does, and leaves the serial part and a plain run alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A "Prometheus" (a copy of sleep by that name: the watcher goes by process name and this
# session's variable) started by an unmarked test, and by one marked slow.
_TESTS = """
import shutil, subprocess
import pytest

def _start(tmp_path):
    fake = tmp_path / "prometheus"
    shutil.copy(shutil.which("sleep"), fake)
    subprocess.Popen([str(fake), "1"]).wait()

def test_unmarked_starts_a_server(tmp_path):
    _start(tmp_path)

@pytest.mark.slow
def test_marked_starts_a_server(tmp_path):
    _start(tmp_path)

@pytest.mark.slow
@pytest.mark.serial
def test_marked_serial_starts_a_server(tmp_path):
    _start(tmp_path)

def test_starts_nothing():
    pass
"""


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_servers.py").write_text(_TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning",
         "--rootdir", str(tmp_path), *args, str(tmp_path)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_quick_profile_fails_an_unmarked_test_that_starts_a_server(tmp_path: Path) -> None:
    r = _pytest(tmp_path, "-m", "not slow")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "test_unmarked_starts_a_server started Prometheus in the quick profile: mark it `slow`" in r.stdout, r.stdout
    assert "2 passed, 2 deselected, 1 error" in r.stdout, r.stdout


def test_the_full_runs_first_part_fails_a_test_that_starts_a_server_unless_it_is_serial(tmp_path: Path) -> None:
    r = _pytest(tmp_path, "-m", "not serial")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "test_marked_starts_a_server started Prometheus in a run of the tests that start no server: mark it `serial`" in r.stdout, r.stdout
    assert "3 passed, 1 deselected, 2 errors" in r.stdout, r.stdout


def test_the_full_run_lets_every_test_start_servers(tmp_path: Path) -> None:
    r = _pytest(tmp_path)
    assert r.returncode == 0 and "4 passed" in r.stdout, r.stdout + r.stderr
