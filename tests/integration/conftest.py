"""A real local Ray cluster per test module, started and stopped by the tests themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from scheduler.runtime.cluster import ClusterInfo, cluster_processes, exited, free_port, ray_bin, stop_head, stop_prometheus
from tests.builders import a_catalog, a_contract

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every slow test here starts Ray or Prometheus: the full run runs it one at a time (``serial``)."""
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.serial)

SMALL_CATALOG = (
    a_catalog()
    .cloud("azure", {"eastus": {"H100": 8}}, price=3.4, latency=1)
    .cloud("oci", {"us-ashburn-1": {"H100": 4000}}, price=2.9, latency=2, startup=60)
    .cloud("coreweave", {"US-EAST-04": {"H100": 16}}, price=2.7, latency=1, startup=90)
    .obj()
    .model_dump(mode="json", by_alias=True)
)
CONTRACT = a_contract(preemption=False).model_dump(mode="json", by_alias=True)


@dataclass
class Cluster:
    info: ClusterInfo
    state: Path
    env: dict[str, str]
    metrics_port: int

    def mcsched(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "scheduler", *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
        if check and r.returncode != 0:
            raise AssertionError(f"mcsched {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def actor(self) -> Any:
        import ray

        from scheduler.runtime.actor import get_actor
        from scheduler.runtime.cluster import connect

        connect(self.info.gcs_address)
        return get_actor(), ray

    def call(self, method: str, *args: Any) -> Any:
        actor, ray = self.actor()
        return ray.get(getattr(actor, method).remote(*args), timeout=60)


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, every: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def job_doc(name: str, cls: str = "training", gpus: int = 8, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mcsched.io/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"class": cls, "gpus": gpus, "gpuType": "H100", **spec},
    }


CLIENT_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")


def clean_env(state: Path) -> dict[str, str]:
    """A user's environment for this state dir: no Ray client variables from elsewhere.

    ``PYTHONPATH`` is this checkout: every process of the cluster inherits it from ``mcsched up``,
    so job drivers, Serve replicas and the actor run the code under test, not whichever
    ``scheduler`` the venv has installed (an editable install may point at another checkout).
    """
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
    env.update({"MCSCHED_HOME": str(state), "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "200"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def start_cluster(catalog: dict[str, Any] = SMALL_CATALOG, contract: dict[str, Any] = CONTRACT, up_args: tuple[str, ...] = ()) -> Cluster:
    """`mcsched up` in a fresh state dir (short: Ray's socket paths are length-limited), free ports."""
    if shutil.which(ray_bin()) is None and not Path(ray_bin()).exists():
        pytest.skip("ray is not installed")
    state = Path(tempfile.mkdtemp(prefix="mcs-", dir="/tmp"))
    (state / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    (state / "contract.yaml").write_text(yaml.safe_dump(contract))
    c = Cluster(ClusterInfo("", "", "", str(state), ""), state, clean_env(state), free_port())
    try:
        c.mcsched(
            "up",
            "--clouds",
            str(state / "catalog.yaml"),
            "--contract",
            str(state / "contract.yaml"),
            "--metrics-port",
            str(c.metrics_port),
            *up_args,
            timeout=600,
        )
        info = ClusterInfo.load(state)
        assert info is not None
        c.info = info
        c.env.update(info.client_env())  # the lines `mcsched up` prints for `ray job submit`
    except BaseException:
        stop_cluster(c, check=False)  # the start's own failure is the one to report
        raise
    return c


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
#: Listening sockets allowed off loopback, by process title prefix -> why that is safe. This is the
#: list docs/serving.md ("Exposure") states; the socket tests compare what they measure with it.
NON_LOOPBACK_ALLOWED: dict[str, str] = {
    "ray::ServeReplica:": "each Serve replica's inter-deployment gRPC server: Ray 2.60 binds it on [::]:<ephemeral> "
    "with no setting (serve/_private/replica.py); Ray's token interceptor guards it; the NetworkPolicy admits only Ray pods",
}


def listening(temp_dir: str) -> list[tuple[str, int, str]]:
    """(address, port, process title) of every listening socket of the cluster's processes."""
    found = []
    for proc in cluster_processes(temp_dir):
        try:
            title = " ".join(proc.cmdline()) or proc.name()
            found += [(c.laddr.ip, c.laddr.port, title) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


def exposed(temp_dir: str) -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
    """(stated, unstated): the off-loopback listening sockets, split by NON_LOOPBACK_ALLOWED."""
    off = [s for s in listening(temp_dir) if s[0] not in LOOPBACK]
    stated = [s for s in off if s[2].startswith(tuple(NON_LOOPBACK_ALLOWED))]
    return stated, [s for s in off if s not in stated]


def running(pid: int) -> bool:
    """Alive and not a zombie (a child of this process that another one stopped is a zombie until reaped)."""
    try:
        return not exited(psutil.Process(pid))
    except psutil.Error:
        return False


def stop_cluster(c: Cluster, *, check: bool = True) -> None:
    """`mcsched down` (only this state dir's processes), then prove nothing of it survived.

    A test cluster that outlives its test holds ports and ~0.7 GB, and a later cluster on the
    machine may fail to start its job agent beside it; so a survivor fails the test.
    """
    down = subprocess.run([sys.executable, "-m", "scheduler", "down"], env=c.env, capture_output=True, text=True, timeout=180)
    temp_dir = c.info.temp_dir or str(c.state / "ray")
    survivors = cluster_processes(temp_dir)
    if c.info.prometheus_pid and running(c.info.prometheus_pid):  # `up --prometheus`'s, or a test's
        survivors.append(psutil.Process(c.info.prometheus_pid))
        stop_prometheus(c.info)
    stop_head(temp_dir)  # whatever `down` missed, so one failure does not leak into later tests
    shutil.rmtree(c.state, ignore_errors=True)
    assert not (check and survivors), (
        f"`mcsched down` left {len(survivors)} process(es) of {temp_dir}: {[p.pid for p in survivors]}\n{down.stdout}{down.stderr}"
    )


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One cluster per test module, which this process joins too (``Cluster.actor``).

    A test module may set CLUSTER_CATALOG / CLUSTER_CONTRACT (dicts) for its own world, and
    CLUSTER_UP_ARGS (more `mcsched up` options, e.g. ``("--nodes", "region")``).
    """
    c = start_cluster(
        getattr(request.module, "CLUSTER_CATALOG", SMALL_CATALOG),
        getattr(request.module, "CLUSTER_CONTRACT", CONTRACT),
        tuple(getattr(request.module, "CLUSTER_UP_ARGS", ())),
    )
    saved = {k: os.environ.get(k) for k in c.info.client_env()}
    os.environ.update(c.info.client_env())
    if "ray" in sys.modules:  # an earlier module's cluster: Ray caches the token it read first
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()
    try:
        yield c
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        finally:
            stop_cluster(c)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
