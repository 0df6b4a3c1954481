"""Our checkpoints, cosignatures and proofs, checked by implementations we did not write (slow).

* Go's ``golang.org/x/mod/sumdb/note`` (Debian's ``golang-golang-x-mod-dev`` with ``golang-go``)
  opens every checkpoint note of a real ledger with our log's verifier key.
* ``aics-tlog`` 0.2.1 (PyPI; needs Python >= 3.12, installed by the test into its own venv
  in a temp dir) verifies every checkpoint, the witnesses' cosignature/v1 quorum on the
  last one, RFC 9162 consistency between consecutive checkpoints and a job's inclusion proofs.

Each is skipped, saying why, only when its toolchain is absent from the machine.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.ledger.merkle import MerkleTree, leaf_hash
from scheduler.ledger.proofs import prove
from scheduler.ledger.signing import load_public_key, log_verifier, parse_checkpoint
from tests.builders import a_job, two_clouds
from tests.ledger.forgery import ORIGIN, World, a_witness

HERE = Path(__file__).parent / "interop"
GO_MOD_SRC = Path("/usr/share/gocode/src/golang.org/x/mod/sumdb/note")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cosigned(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, dict]:
    tmp = tmp_path_factory.mktemp("interop")
    w = World(tmp, two_clouds(azure_h100=8))
    w.op(lambda e: e.submit(a_job().named("first").gpus(8).obj()))
    w.op(lambda e: e.submit(a_job().named("spill").gpus(8).obj()))
    w.op(lambda e: e.release("spill"))
    w.close()
    wits = {"w1": a_witness(tmp, "azure.example/w1"), "w2": a_witness(tmp, "azure.example/w2")}
    assert all(": cosigned checkpoint" in line for line in w.cosign(wits))
    conn = sqlite3.connect(w.db)
    rows = [(int(i), bytes(n)) for i, n in conn.execute("SELECT id, note FROM checkpoints ORDER BY id")]
    cosigs = [bytes(line) for (line,) in conn.execute("SELECT line FROM cosignatures WHERE checkpoint = ?", (rows[-1][0],))]
    leaves = [leaf_hash(bytes(x)) for (x,) in conn.execute("SELECT leaf FROM records ORDER BY seq")]
    conn.close()
    notes = [n for _, n in rows]
    notes[-1] = notes[-1] + b"".join(line + b"\n" for line in cosigs)
    cps = [parse_checkpoint(n) for n in notes]
    tree = MerkleTree(leaves)
    b64 = lambda h: base64.b64encode(h).decode()  # noqa: E731
    consistency = [
        [a.size, b.size, b64(a.root), b64(b.root), [b64(h) for h in tree.consistency_proof(a.size, b.size)]]
        for a, b in itertools.pairwise(cps)
        if 0 < a.size < b.size
    ]
    doc = {
        "log": log_verifier(ORIGIN, load_public_key(w.pub)).vkey(),
        "witnesses": [x.verifier.vkey() for x in wits.values()],
        "quorum": 2,
        "notes": [n.decode() for n in notes],
        "consistency": consistency,
        "proof": prove(w.db, "spill"),
    }
    assert len(notes) > 3 and consistency
    return w, doc


def test_go_sumdb_note_opens_every_checkpoint(cosigned: tuple[World, dict], tmp_path: Path) -> None:
    go = shutil.which("go")
    if go is None or not GO_MOD_SRC.is_dir():
        pytest.skip("Go with golang.org/x/mod is not installed (apt-get install golang-go golang-golang-x-mod-dev)")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOCACHE": str(tmp_path / "gocache")}
    exe = tmp_path / "note_check"
    subprocess.run([go, "build", "-o", str(exe), str(HERE / "note_check.go")], check=True, env=env, cwd=tmp_path, timeout=600)
    _, doc = cosigned
    notes = "----\n".join(doc["notes"]).encode()
    ok = subprocess.run([str(exe), doc["log"]], input=notes, capture_output=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.decode().startswith(f"OK: {len(doc['notes'])} notes"), ok.stdout
    forged = notes.replace(b"\n3\n", b"\n4\n", 1) if b"\n3\n" in notes else notes.replace(b"\n1\n", b"\n2\n", 1)
    bad = subprocess.run([str(exe), doc["log"]], input=forged, capture_output=True, timeout=60)
    assert bad.returncode == 1 and b"FAIL" in bad.stdout, bad.stdout


def _python312() -> str | None:
    """An interpreter >= 3.12: on PATH, or installed by pyenv beside this one (its shims may not select it)."""
    if sys.version_info >= (3, 12):
        return sys.executable
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(n) for n in ("python3.12", "python3.13", "python3.14")]
    candidates += [str(p) for p in sorted(root.glob("3.1[2-9]*/bin/python3"))]
    for exe in filter(None, candidates):
        probe = subprocess.run([exe, "-c", "import sys; print(sys.version_info >= (3, 12))"], capture_output=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == b"True":
            return exe
    return None


def test_aics_tlog_verifies_checkpoints_cosignatures_and_proofs(cosigned: tuple[World, dict], tmp_path: Path) -> None:
    python = _python312()
    if python is None:
        pytest.skip("no Python >= 3.12 on this machine (aics-tlog 0.2.1 requires it); the Go sumdb/note check still runs")
    env_dir = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(env_dir)], check=True, timeout=300)
    vpy = env_dir / "bin" / "python"
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "aics-tlog==0.2.1"], check=True, timeout=600)
    _, doc = cosigned
    ok = subprocess.run([str(vpy), str(HERE / "aics_check.py")], input=json.dumps(doc).encode(), capture_output=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith(b"OK: "), ok.stdout + ok.stderr
    doc["proof"]["records"][0]["record"] = doc["proof"]["records"][0]["record"].replace('"at":', '"at":1', 1)
    bad = subprocess.run([str(vpy), str(HERE / "aics_check.py")], input=json.dumps(doc).encode(), capture_output=True, timeout=120)
    assert bad.returncode == 1 and b"FAIL: inclusion" in bad.stdout, bad.stdout


