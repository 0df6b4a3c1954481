"""Suite-wide set-up."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

# Every Ray cluster the tests start or join is a single-node one on 127.0.0.1. Ray reads this,
# its single-node switch, when it is first imported, so it is set before any test imports it
# (see scheduler.runtime.cluster.loopback_env).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# A shell that ran `eval "$(mcsched env)"` for the user's own cluster (e.g. the one the
# quickstart leaves running) must not steer the tests to it: each test names its own cluster.
for _var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
    os.environ.pop(_var, None)


@pytest.fixture(autouse=True, scope="session")
def _private_mcsched_home() -> Iterator[None]:
    """Ledgers sign with a throw-away key and witness into a throw-away file, never ~/.mcsched."""
    home = tempfile.mkdtemp(prefix="mcs-home-")
    saved = {k: os.environ.get(k) for k in ("MCSCHED_HOME", "MCSCHED_SIGNING_KEY", "MCSCHED_WITNESS", "MCSCHED_PUBLIC_KEY")}
    os.environ["MCSCHED_HOME"] = home
    for k in ("MCSCHED_SIGNING_KEY", "MCSCHED_WITNESS", "MCSCHED_PUBLIC_KEY"):
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)
