"""Suite-wide set-up."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
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


# --- The quick profile (`pytest -m "not slow"`, `deploy/local/test.sh --quick`) starts no Ray and
# no Prometheus: a test that does must be marked `slow`. Every process the tests start inherits
# this session's marker variable; while a quick run lasts, a watcher looks for a Ray GCS server or
# a Prometheus carrying it (other Ray clusters on the machine do not) and fails the test it caught.
SESSION_MARK = "MCSCHED_TEST_SESSION"
SERVERS = {"gcs_server": "Ray", "prometheus": "Prometheus"}


#: The runs that start no server, by the marker expression that selects them: (the marker a
#: test that starts one must carry, what the failure calls the run).
SERVER_FREE_RUNS = {
    "not slow": ("slow", "the quick profile"),
    "not serial": ("serial", "a run of the tests that start no server"),  # the full run's first part, on both cores
}


def server_free_run(config: pytest.Config) -> tuple[str, str] | None:
    """This run's entry of ``SERVER_FREE_RUNS``; None when servers are allowed."""
    expr = config.getoption("markexpr", "") or ""
    return next((run for selects, run in SERVER_FREE_RUNS.items() if selects in expr), None)


class ServerWatch:
    """Polls (every 0.3 s) for servers started by this test session; records them by test."""

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.current = "(collection)"
        self.caught: dict[str, set[str]] = {}
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="quick-profile-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.poll()

    def poll(self) -> None:
        import psutil

        for proc in psutil.process_iter(["name", "pid"]):
            what = SERVERS.get(proc.info["name"] or "")
            if what is None or proc.info["pid"] in self.seen:
                continue
            try:
                ours = proc.environ().get(SESSION_MARK) == self.mark
            except psutil.Error:
                continue
            if ours:
                self.seen.add(proc.info["pid"])
                self.caught.setdefault(self.current, set()).add(what)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_MARK] = uuid.uuid4().hex
    xdist_controller = bool(config.getoption("numprocesses", None)) and not hasattr(config, "workerinput")  # runs no test
    if server_free_run(config) is not None and not xdist_controller:
        config.stash[_WATCH] = ServerWatch(os.environ[SESSION_MARK])


def pytest_unconfigure(config: pytest.Config) -> None:
    watch = config.stash.get(_WATCH, None)
    if watch is not None:
        watch.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    watch = item.config.stash.get(_WATCH, None)
    if watch is not None:
        watch.current = item.nodeid
    return (yield)


@pytest.fixture(autouse=True)
def _server_free_runs_start_no_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    watch = request.config.stash.get(_WATCH, None)
    if watch is None:
        return
    watch.poll()  # what started since the last tick
    started = watch.caught.pop(request.node.nodeid, None)
    if started:
        found = server_free_run(request.config)
        assert found is not None  # the watch runs only in such a run
        marker, run = found
        pytest.fail(f"{request.node.nodeid} started {' and '.join(sorted(started))} in {run}: mark it `{marker}`", pytrace=False)


_WATCH = pytest.StashKey[ServerWatch]()
