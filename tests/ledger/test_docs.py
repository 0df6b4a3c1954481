"""docs/audit.md: every shell block runs as written, in order, and the flow verifies (slow)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "audit.md"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_audit_walkthrough_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 8
    port = str(free_port())
    script = "set -euo pipefail\n" + "\n".join(b.replace("8470", port) for b in blocks)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "mcsched"  # this checkout's CLI, whatever is installed
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; from scheduler.cli import main; sys.argv[0] = \'mcsched\'; main()" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cosigned checkpoint of size" in done.stdout
    assert "pinned by" in done.stdout and "cosigned by 1 of 1 witnesses (quorum 1)" in done.stdout, done.stdout
    assert "OK: gpt-pretrain: " in done.stdout, done.stdout
    assert "log key rotated at size" in done.stdout and done.stdout.count("cosigned by 1 of 1 witnesses") == 2, done.stdout
