#!/usr/bin/env bash
# README command 2: install, then run the whole test suite (slow Ray/Prometheus tests included).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
