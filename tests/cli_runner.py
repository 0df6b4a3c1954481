"""Run ``mcsched`` in-process, as a user would from a shell: exit code, stdout, stderr."""

from __future__ import annotations

import pytest

from scheduler.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def run_joined(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``run`` with stdout and stderr as one text (what a terminal shows)."""
    code, out, err = run(list(args), capsys)
    return code, (out + err).strip()
