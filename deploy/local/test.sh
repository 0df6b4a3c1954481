#!/usr/bin/env bash
# README command 2: install, then run the whole test suite (slow Ray/Prometheus tests and the
# compiled-wheel build included): `bash deploy/local/test.sh [pytest args]`.
# `--quick` first runs the quick profile instead: `pytest -m "not slow"`, no Ray, no Prometheus,
# no wheel builds (a test that starts Ray or Prometheus there fails: tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/bootstrap.sh
if [ "${1:-}" = "--quick" ]; then
  shift
  exec .venv/bin/python -m pytest -m "not slow" -n 2 "$@"
fi
exec .venv/bin/python -m pytest "$@"
