"""Where the shared real traces are, if they are here at all (tests that need them skip with why)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.shared import ABSENT, shared

#: ``$MCSCHED_TRACES``, else ``traces`` in ``../shared`` (see tests/shared.py).
TRACES = Path(os.environ["MCSCHED_TRACES"]) if os.environ.get("MCSCHED_TRACES") else shared("traces")
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"{TRACES} {ABSENT}; or set MCSCHED_TRACES")
