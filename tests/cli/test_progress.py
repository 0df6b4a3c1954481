"""Progress output: a bar on a terminal for long work, nothing when stderr is piped."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from scheduler.loading import load_files

cli_app = importlib.import_module("scheduler.cli.app")  # the module (``scheduler.cli.app`` is also the Typer object's name)


def many_jobs(path: Path, n: int) -> Path:
    path.write_text("---\n".join(f"apiVersion: mcsched.io/v1\nkind: Job\nmetadata: {{name: j{i}}}\nspec: {{class: training, gpus: 1, gpuType: H100}}\n" for i in range(n)))
    return path


def test_a_terminal_gets_bars_for_reading_and_validating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(cli_app, "err", Console(file=screen, force_terminal=True, width=100))
    with cli_app.stage_progress(threshold=100) as progress:
        loaded, errors = load_files([many_jobs(tmp_path / "jobs.yaml", 300)], progress)
    assert len(loaded) == 300 and not errors
    shown = screen.getvalue()
    assert "reading" in shown and "validating" in shown and "300/300" in shown


def test_small_work_and_pipes_stay_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(cli_app, "err", Console(file=screen, force_terminal=True, width=100))
    with cli_app.stage_progress(threshold=1000) as progress:
        load_files([many_jobs(tmp_path / "few.yaml", 50)], progress)
    assert screen.getvalue() == ""
    # A real process whose stderr is a pipe: only the result line, no bar, no control codes.
    big = many_jobs(tmp_path / "big.yaml", 12_000)
    r = subprocess.run([sys.executable, "-m", "scheduler", "validate", str(big)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok: 12000 document(s) in 1 file(s) (jobs checked against the shipped example catalog and the shipped example contract)" and r.stderr == ""
