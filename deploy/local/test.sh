#!/usr/bin/env bash
# README command 2: install, then run the whole test suite (slow Ray/Prometheus tests and the
# compiled-wheel build included): `bash deploy/local/test.sh [pytest args]` (with arguments:
# one pytest run with them).
# `--quick` first runs the quick profile instead: `pytest -m "not slow"`, no Ray, no Prometheus,
# no wheel builds (a test that starts Ray or Prometheus there fails: tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/bootstrap.sh
# The ledger's interop test checks our signed notes with Go's golang.org/x/mod/sumdb/note (an
# implementation we did not write): install it as root where it is missing (full run only).
if [ "${1:-}" != "--quick" ] && ! command -v go >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test.sh: installing Debian's Go and golang.org/x/mod for the ledger interop test" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-golang-x-mod-dev >/dev/null || true
fi
if [ "${1:-}" = "--quick" ]; then
  shift
  exec .venv/bin/python -m pytest -m "not slow" -n 2 "$@"
fi
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# The whole suite in two runs: the tests that start no server (the quick profile, and the slow
# tests that only compute or build wheels) on both cores, then the `serial` ones (Ray,
# Prometheus) one at a time: two Ray clusters on two cores miss their nodes' health checks.
# Both always run; the exit code is the first run's failure, else the second's.
first=0
.venv/bin/python -m pytest -m "not serial" -n 2 || first=$?
serial=0
.venv/bin/python -m pytest -m serial || serial=$?
if [ "$first" -ne 0 ]; then exit "$first"; fi
exit "$serial"
