"""The compiled core (setup.py, scheduler/native.py): used only where it matches its sources,
and it decides exactly as the Python source does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import native
from tests.builds import run_both_builds

ROOT = Path(__file__).resolve().parents[1]


def _copy_core(to: Path) -> None:
    for module in native.CORE_MODULES:
        target = native.source_path(module, to)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(native.source_path(module), target)


def test_an_edited_core_source_makes_its_compiled_build_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    _copy_core(tmp_path)
    stamp = tmp_path / "scheduler" / native.STAMP.name
    assert native.stale_reason(tmp_path) == "no build stamp"
    stamp.write_text(f"{native.source_digest(tmp_path)} mypyc\n")
    assert native.stale_reason(tmp_path) is None
    queue = native.source_path("scheduler.queue", tmp_path)
    queue.write_text(queue.read_text() + "# an edit\n")
    assert "changed since it was compiled" in (native.stale_reason(tmp_path) or "")
    stamp.write_text(f"{native.source_digest(tmp_path)} mypyc\n")  # rebuilt
    assert native.stale_reason(tmp_path) is None
    monkeypatch.setenv(native.PURE_ENV, "1")
    assert native.stale_reason(tmp_path) == f"{native.PURE_ENV} is set"


def _core_files(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import importlib, json, scheduler.native as n\n"
        "print(json.dumps({m: importlib.import_module(m).__file__ for m in n.CORE_MODULES}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def test_the_core_is_compiled_exactly_where_a_matching_build_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    env = dict(os.environ)
    files = _core_files(env)
    if native.stale_reason() is None and native.STAMP.exists():
        assert all(not f.endswith(".py") for f in files.values()), files  # every module, not some
    else:
        assert all(f.endswith(".py") for f in files.values()), files
    if os.environ.get("CI") == "true":  # CI installs with a C compiler: the shipped fast path is what it tests
        assert native.stale_reason() is None and all(not f.endswith(".py") for f in files.values())
    pure = _core_files({**env, native.PURE_ENV: "1"})
    assert all(f.endswith(".py") for f in pure.values()), pure


_WORKLOAD = """
import hashlib, json, random, sys
sys.path.insert(0, ".")
from benchmarks.engine import grown_catalog, workload
from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.loading import load_contract
from scheduler.native import core_build
from scheduler.paths import default_contract
rng = random.Random(5)
catalog = grown_catalog()
engine = Engine(catalog, load_contract(default_contract(), catalog), ManualClock())
digest = hashlib.sha256()
count = [0]
def sink(ev):
    count[0] += 1
    digest.update(json.dumps(ev.to_record(), sort_keys=True).encode())
engine.subscribe(sink)
engine.place_many(workload(1_500, rng))
running = [n for n, r in engine.jobs.items() if r.state == "running"]
rng.shuffle(running)
for name in running[: len(running) // 2]:
    engine.release(name)
print(json.dumps({"build": core_build(), "events": count[0], "digest": digest.hexdigest()}))
"""


def test_the_compiled_core_decides_exactly_as_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,500 mixed jobs on ~120 pools, half of the placed ones ending: the same events, byte for byte."""
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    compiled, source = run_both_builds(_WORKLOAD)
    assert compiled["events"] > 5_000
    assert (compiled["events"], compiled["digest"]) == (source["events"], source["digest"])
