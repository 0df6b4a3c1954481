#!/usr/bin/env bash
# Create .venv and install mcsched with its test extras (idempotent: reinstalls when
# pyproject.toml changed since the last install). Installs Debian's prometheus (needed by
# the observability tests) when missing and we are root.
#
# This is the plain editable install: the placement core runs as Python source, so an edit
# takes effect at once. The compiled core is an opt-in build (MCSCHED_COMPILE=1 pip install .,
# see docs/development.md); the full test run builds and checks it in a temp venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
fi
# Compiled modules built in place by an earlier compiled editable install would shadow their
# edited sources (Python prefers an extension module to a .py): an editable source build has none.
leftovers=$(find scheduler -name '*.so' 2>/dev/null; find . -maxdepth 1 -name '*__mypyc*.so' 2>/dev/null)
if [ -n "$leftovers" ]; then
  echo "bootstrap: removing compiled modules left in the source tree by an earlier compiled build" >&2
  echo "$leftovers" | xargs rm -f
  rm -f scheduler/native.stamp
fi
stamp=.venv/.mcsched-installed
want=$(sha256sum pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import scheduler, ray, pytest, hypothesis" 2>/dev/null; then
  echo "bootstrap: installing mcsched[test] as an editable Python source build (Ray included; a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  env -u MCSCHED_COMPILE .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
echo "bootstrap: placement core: $(.venv/bin/python -c 'from scheduler.build_info import core_build; print(core_build())')" >&2
if ! command -v prometheus >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's prometheus" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
