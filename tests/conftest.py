"""Every test session gets its own $MCSCHED_HOME: ledgers sign with a throw-away key and
witness into a throw-away file, never the developer's ~/.mcsched."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_mcsched_home() -> Iterator[None]:
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
