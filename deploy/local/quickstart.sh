#!/usr/bin/env bash
# README command 1: install, then run the main example job on the embedded default
# (a local Ray cluster that mcsched starts for you if none is running).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/bootstrap.sh
exec .venv/bin/mcsched run deploy/examples/job.yaml "$@"
