"""The live scheduler actor on a real local Ray cluster gets its checkpoints cosigned by a witness
running in its own process (issue 27), and exports the witness lag; an auditor with only the
trust file verifies the live ledger with the witness's cosignature."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scheduler.runtime.cluster import ClusterInfo, free_port
from tests.integration.conftest import CONTRACT, ROOT, SMALL_CATALOG, Cluster, clean_env, job_doc, stop_cluster, wait_for

pytestmark = pytest.mark.slow

ORIGIN = "test.example/live-ledger"


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str, Path]]:
    """`mcsched up --witness-url` against a `mcsched witness run` started first; (cluster, witness vkey, trust file)."""
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="mcs-", dir="/tmp"))
    (state / "catalog.yaml").write_text(yaml.safe_dump(SMALL_CATALOG))
    (state / "contract.yaml").write_text(yaml.safe_dump(CONTRACT))
    c = Cluster(ClusterInfo("", "", "", str(state), ""), state, clean_env(state), free_port())
    c.env["MCSCHED_LEDGER_ORIGIN"] = ORIGIN  # the actor inherits it from `mcsched up`
    keygen = c.mcsched("audit", "keygen", "--origin", ORIGIN).stdout
    log_vkey = re.search(r"log verifier key: (\S+)", keygen)
    assert log_vkey, keygen
    wdir = tmp_path_factory.mktemp("witness")
    port = free_port()
    witness = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "witness", "run", "--name", "azure.example/w1", "--key", str(wdir / "w1.key"),
         "--state", str(wdir / "w1-state.json"), "--log", log_vkey.group(1), "--port", str(port)],
        env=c.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert witness.stdout is not None
        line = witness.stdout.readline()
        vkey = re.search(r"verifier key (\S+)", line)
        assert vkey, line
        c.mcsched("up", "--clouds", str(state / "catalog.yaml"), "--contract", str(state / "contract.yaml"),
                  "--metrics-port", str(c.metrics_port), "--witness-url", f"http://127.0.0.1:{port}", timeout=600)  # fmt: skip
        info = ClusterInfo.load(state)
        assert info is not None
        c.info = info
        c.env.update(info.client_env())
        trust = wdir / "trust.toml"
        trust.write_text(c.mcsched("audit", "trust", "--origin", ORIGIN, "--public-key", str(state / "ledger-signing.pub"),
                                   "--witness-key", vkey.group(1), "--quorum", "1").stdout)  # fmt: skip
        saved = {k: os.environ.get(k) for k in c.info.client_env()}
        os.environ.update(c.info.client_env())  # this process joins too (Cluster.call), as the shared fixture does
        if "ray" in sys.modules:
            from ray._raylet import AuthenticationTokenLoader

            AuthenticationTokenLoader.instance().reset_cache()
        yield c, vkey.group(1), trust
    finally:
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        stop_cluster(c, check=False)
        witness.terminate()
        witness.wait(timeout=30)
        for key, value in (saved if "saved" in locals() else {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def scrape(c: Cluster) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def test_the_live_actor_is_cosigned_by_the_witness_and_verifies_with_the_quorum(witnessed: tuple[Cluster, str, Path]) -> None:
    c, _, trust = witnessed
    assert c.call("submit", [job_doc("cosigned-a", gpus=8), job_doc("cosigned-b", gpus=8)])["ok"]
    assert "mcsched_ledger_witnesses 1.0" in scrape(c)
    wait_for(lambda: "mcsched_ledger_witness_lag_seconds 0.0" in scrape(c), timeout=60, what="the witness to catch up")

    def verified() -> str | None:
        r = c.mcsched("audit", "verify", "--db", str(c.state / "ledger.db"), "--trust", str(trust), "--allow-unsigned-tail", check=False)
        return r.stdout if r.returncode == 0 else None

    out = wait_for(verified, timeout=60, every=1.0, what="audit verify --trust to pass on the live ledger")
    assert "cosigned by 1 of 1 witnesses (quorum 1)" in out and f"origin {ORIGIN} pinned by" in out, out
