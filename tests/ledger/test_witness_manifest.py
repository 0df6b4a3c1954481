"""manifests/witness: the holder's witness Deployment renders and validates strictly (offline)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_witness_manifests_render_and_validate() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    exe = Path(sys.executable).with_name("kubectl")
    kubectl = str(exe) if exe.exists() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it renders the kustomization)")
    done = subprocess.run([kubectl, "kustomize", str(ROOT / "manifests" / "witness")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["mcsched", "witness", "run"] and deploy["spec"]["replicas"] == 1
    assert {"--key=/var/run/mcsched-witness/witness.key", "--state=/var/lib/mcsched-witness/state.json"} <= set(container["args"])
