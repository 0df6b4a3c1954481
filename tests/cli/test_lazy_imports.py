"""Offline commands start without what they do not use: the fixed cost of every ``mcsched`` run.

``plan`` and ``validate`` on 10k jobs spend a good part of their time starting up, so the
heavy packages (Ray, the ledger's cryptography and SQLite, Prometheus, asyncio, rich on a
pipe) are imported only by the commands that need them. These tests run the commands in
a fresh interpreter and look at ``sys.modules`` afterwards: a structural check, not a timing.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from scheduler.cli import app, app_for
from scheduler.cli.app import LazyConsole
from scheduler.paths import examples_dir

JOB = str(examples_dir() / "job.yaml")
NEVER_OFFLINE = (
    "ray",
    "cryptography",
    "prometheus_client",
    "sqlite3",
    "asyncio",
    "scheduler.ledger",
    "scheduler.runtime.cluster",
)

# Runs mcsched in-process (stdout to a buffer, stderr a pipe) and reports the top-level modules it imported.
PROBE = """
import contextlib, io, json, sys
from scheduler.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        assert not exc.code, exc.code
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(*argv: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.splitlines()[-1]))


def loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


@pytest.mark.parametrize(
    "argv",
    [["plan", "-o", "json", JOB], ["validate", JOB], ["--version"]],
    ids=["plan-json", "validate", "version"],
)
def test_offline_commands_import_no_runtime_ledger_or_metrics(argv: list[str]) -> None:
    modules = imported_by(*argv)
    assert not [name for name in NEVER_OFFLINE if loaded(modules, name)]


def test_plan_json_on_a_pipe_does_without_rich() -> None:
    assert not loaded(imported_by("plan", "-o", "json", JOB), "rich")


def test_plan_with_a_ledger_still_gets_one(tmp_path: Path) -> None:
    modules = imported_by("plan", "-o", "json", "--db", str(tmp_path / "plan.db"), "--signing-key", str(tmp_path / "k.key"), JOB)
    assert loaded(modules, "scheduler.ledger") and (tmp_path / "plan.db").exists()


def test_every_command_runs_alone_and_the_rest_get_the_whole_app() -> None:
    names = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback is not None]
    names += [g.name for g in app.registered_groups if g.name]
    assert {"plan", "validate", "status", "audit", "simulate", "loadgen"} <= set(names)
    for name in names:
        slim = app_for([name, "--help"])
        assert slim is not app and len(slim.registered_commands) + len(slim.registered_groups) == 1
    for args in ([], ["--help"], ["--version"], ["nosuchcmd"], ["pla"]):
        assert app_for(args) is app


@pytest.mark.parametrize(
    "env",
    [{}, {"FORCE_COLOR": "1"}, {"FORCE_COLOR": ""}, {"TTY_COMPATIBLE": "1"}, {"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1"}],
)
def test_the_lazy_console_knows_a_terminal_as_rich_does(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert LazyConsole(stderr=True).is_terminal == Console(stderr=True).is_terminal


def test_a_ray_job_driver_loads_the_actor_class_without_the_engine_ledger_or_metrics() -> None:
    """Ray loads the scheduler actor's class in every process that calls it (each `mcsched run`
    driver, for the methods' signatures); that costs the driver's start-up only what it uses."""
    probe = "import json, sys; import scheduler.runtime.actor; print(json.dumps(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    modules = set(json.loads(r.stdout.splitlines()[-1]))
    heavy = ("scheduler.engine", "scheduler.core", "scheduler.ledger", "scheduler.metrics", "prometheus_client", "cryptography", "sqlite3")
    assert not [name for name in heavy if loaded(modules, name)]
