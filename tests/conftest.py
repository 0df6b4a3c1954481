"""Suite-wide set-up."""

from __future__ import annotations

import os

# Every Ray cluster the tests start or join is a single-node one on 127.0.0.1. Ray reads this,
# its single-node switch, when it is first imported, so it is set before any test imports it
# (see scheduler.runtime.cluster.loopback_env).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
