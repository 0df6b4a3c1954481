"""Usage errors like any CLI: one line naming the command, click's message and where to get
help, exit 2, never a traceback - whatever typer/click raises underneath."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scheduler.build_info import core_build
from scheduler.cli import main
from scheduler.paths import examples_dir

JOB = str(examples_dir() / "job.yaml")

# (argv, what the one line must say)
CORPUS: list[tuple[list[str], str]] = [
    (["plan", "--bogus", "x"], "No such option: --bogus"),
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
    (["stauts"], "Did you mean 'status'?"),
    (["--bogus"], "No such option: --bogus"),
    (["plan"], "Missing argument"),
    (["validate"], "Missing argument"),
    (["run"], "Missing argument"),
    (["submit"], "Missing argument"),
    (["cancel"], "Missing argument"),
    (["fault"], "Missing argument"),
    (["audit", "verify"], "Missing option '--db'"),
    (["audit", "nope"], "No such command 'nope'"),
    (["plan", JOB, "-o", "yaml"], "'yaml' is not one of 'table', 'json'"),
    (["plan", JOB, "-o"], "requires an argument"),
    (["plan", JOB, "--clouds"], "requires an argument"),
    (["status", "-o", "xml"], "'xml' is not one of"),
    (["up", "--metrics-port", "abc"], "--metrics-port"),
    (["up", "--metrics-port", "0"], "--metrics-port"),
    (["up", "--metrics-port", "70000"], "--metrics-port"),
    (["up", "--prometheus=maybe"], "does not take a value"),
    (["serve"], "Missing option '--address'"),
    (["fault", "azure", "--extra-latency", "-1"], "--extra-latency"),
    (["fault", "azure", "--extra-latency", "soon"], "--extra-latency"),
    (["env", "--state-dir"], "requires an argument"),
    (["down", "extra-arg"], "unexpected extra argument"),
    (["simulate", "--format", "csv"], "Missing option"),
    (["manifests", "--check=yes"], "does not take a value"),
]


@pytest.mark.parametrize(("argv", "says"), CORPUS, ids=[" ".join(a) or "-" for a, _ in CORPUS])
def test_usage_error_is_one_line_with_a_hint_and_exit_2(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert done.value.code == 2, cap.err
    assert len(lines) == 1, cap.err
    assert says.lower() in lines[0].lower(), lines[0]
    assert lines[0].startswith("mcsched") and "--help' for help." in lines[0], lines[0]
    assert "Traceback" not in cap.err + cap.out


def test_no_arguments_prints_the_help() -> None:
    r = subprocess.run([sys.executable, "-m", "scheduler"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 2 and "Usage:" in r.stdout and "plan" in r.stdout and "Traceback" not in r.stderr


def test_the_installed_entry_point_prints_no_traceback() -> None:
    """The real process (not an in-process call): stderr is exactly the one line."""
    exe = Path(sys.executable).with_name("mcsched")
    r = subprocess.run([str(exe), "plan", "--bogus", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["mcsched plan: No such option: --bogus (Possible options: --clouds). Try 'mcsched plan --help' for help."]


def test_version() -> None:
    """The second line says which build of the core this install runs (tests/test_packaging.py checks the compiled one)."""
    r = subprocess.run([sys.executable, "-m", "scheduler", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("mcsched ")
    assert r.stdout.splitlines()[1] == f"placement core: {core_build()}", r.stdout


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every visible command path under a click group (typer may vendor its own click: duck-typed)."""
    out: list[tuple[str, ...]] = []
    for name, cmd in sorted(group.commands.items()):
        if cmd.hidden:
            continue
        out.append((*prefix, name))
        if getattr(cmd, "commands", None):
            out.extend(_commands(cmd, (*prefix, name)))
    return out


def test_every_help_shows_flags_as_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """A flag (``--explain``, ``--help``) takes no value, and its help must not show one: typer
    0.29 prints ``<bool>`` beside every flag, and a user who types ``--explain true`` gets a
    confusing error (pyproject pins typer below it)."""
    import typer

    from scheduler.cli.app import app

    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 20
    for argv in commands:
        try:
            main([*argv, "--help"])
        except SystemExit as done:
            assert not done.code, argv
        text = capsys.readouterr().out
        assert "--help" in text, argv
        assert "<bool>" not in text, f"mcsched {' '.join(argv)} --help shows a value for a flag:\n{text}"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["fault", "azure", "--down", "--up"], "fault: --down and --up cannot be combined"),  # the last one used to win
        (["drain", "azure", "--move", "--undo"], "drain: --move and --undo cannot be combined (--move drains, --undo opens)"),
    ],
)
def test_contradictory_flags_are_refused_before_any_cluster_is_looked_for(argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--state-dir", str(tmp_path)])
    assert done.value.code == 2 and capsys.readouterr().err.strip() == says
