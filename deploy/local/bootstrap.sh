#!/usr/bin/env bash
# Create .venv and install mcsched with its test extras (idempotent: reinstalls when
# pyproject.toml changed since the last install). Installs Debian's prometheus (needed by
# the observability tests) when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.mcsched-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import scheduler, ray, pytest, hypothesis" 2>/dev/null; then
  echo "bootstrap: installing mcsched[test] (Ray included, and the placement core compiled by mypyc; a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
elif [ -f scheduler/native.stamp ] && ! .venv/bin/python -c "import sys, scheduler.native as n; sys.exit(n.stale_reason() is not None)" 2>/dev/null \
  && [ -z "${MCSCHED_PURE_PYTHON:-}" ]; then
  # the core's sources changed since it was compiled (a pull, an edit): it runs as Python until rebuilt
  echo "bootstrap: recompiling the placement core (its sources changed since the last build)" >&2
  .venv/bin/python -m pip install -q --no-deps -e .
fi
# a build that could not compile installs the core as Python (slower, same decisions): say which one runs
echo "bootstrap: placement core: $(.venv/bin/python -c 'from scheduler.native import core_build; print(core_build())')" >&2
if ! command -v prometheus >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's prometheus" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
