"""A replay's ledger on request is compact (``--ledger FILE.zst``): about ten times smaller, and
``mcsched audit verify``, ``export`` and ``prove`` read it as is, with the same answers as the plain one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.ledger.compact import MAGIC, is_sealed
from tests.cli_runner import run

CATALOG = """apiVersion: mcsched.io/v1
kind: CloudCatalog
metadata: {name: t}
spec:
  backends:
    - {name: azure, latencySeconds: 2, startupSeconds: 120, prices: {H100: 3.4}, regions: [{name: eastus, jurisdiction: US, gpus: {H100: 16}}]}
    - {name: oci, latencySeconds: 3, startupSeconds: 60, prices: {H100: 2.9}, regions: [{name: us-ashburn-1, jurisdiction: US, gpus: {H100: 64}}]}
"""


@pytest.fixture()
def replayed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """The same 600-job replay written with a plain ledger and with a compact one."""
    trace = tmp_path / "t.csv"
    trace.write_text("t,n,d,c\n" + "".join(f"{i * 20},{1 + i % 8},{900 + i},{'api-serving' if i % 5 == 0 else 'training'}\n" for i in range(600)))
    (tmp_path / "clouds.yaml").write_text(CATALOG)
    base = ["simulate", "--trace", str(trace), "--format", "csv", "--columns", "arrival=t,gpus=n,duration=d,class=c",
            "--clouds", str(tmp_path / "clouds.yaml"), "--no-plots"]
    paths = {"plain": tmp_path / "plain" / "ledger.db", "compact": tmp_path / "compact" / "ledger.db.zst"}
    for name, ledger in paths.items():
        code, out, err = run([*base, "--out", str(tmp_path / name), "--ledger", str(ledger)], capsys)
        assert code == 0, err
        assert json.loads((tmp_path / name / "summary.json").read_text())["ledger"]["path"] == str(ledger)
        assert str(ledger) in out  # the verify command the report gives names the file written
    return paths


def test_a_compact_ledger_is_a_tenth_of_the_plain_one_and_verifies_the_same(replayed: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    plain, compact = replayed["plain"], replayed["compact"]
    assert compact.read_bytes()[:4] == MAGIC and is_sealed(compact) and not is_sealed(plain)
    assert compact.stat().st_size * 5 < plain.stat().st_size, (compact.stat().st_size, plain.stat().st_size)
    lines = {}
    for name, db in replayed.items():
        code, out, err = run(["audit", "verify", "--db", str(db), "--public-key", f"{db}.pub"], capsys)
        assert code == 0, err
        lines[name] = out.split(": ", 1)[1]
    # the same verdict on the same records (each run signs with its own throwaway key: the origins differ)
    assert lines["plain"].startswith("OK: ") and lines["plain"].split(",")[0] == lines["compact"].split(",")[0], lines
    exports = {}
    for name, db in replayed.items():
        code, out, err = run(["audit", "export", "--db", str(db)], capsys)
        assert code == 0, err
        exports[name] = out
    assert exports["plain"] == exports["compact"] and len(exports["plain"].splitlines()) > 600 * 4
    code, out, err = run(["audit", "prove", "j", "--db", str(compact)], capsys)
    assert code != 0 or "records" in out  # a job the trace does not have: refused or empty, never a traceback
    name = json.loads(exports["plain"].splitlines()[1])["job"]
    code, out, err = run(["audit", "prove", name, "--db", str(compact)], capsys)
    assert code == 0, err
    assert json.loads(out)["records"]


def test_a_damaged_compact_ledger_is_one_line_exit_1_or_2(replayed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compact = replayed["compact"]
    cut = tmp_path / "cut.db.zst"
    cut.write_bytes(compact.read_bytes()[: compact.stat().st_size // 2])
    code, out, err = run(["audit", "verify", "--db", str(cut), "--public-key", f"{compact}.pub"], capsys)
    assert code in (1, 2) and "Traceback" not in err
    assert len((out + err).strip().splitlines()) == 1 and str(cut) in out + err, out + err


def test_several_policies_write_one_compact_ledger_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t,n,d\n" + "".join(f"{i * 60},{1 + i % 4},600\n" for i in range(50)))
    code, _out, err = run(["simulate", "--trace", str(trace), "--format", "csv", "--columns", "arrival=t,gpus=n,duration=d", "--no-plots",
                          "--policy", "contract,cheapest", "--out", str(tmp_path / "o"), "--ledger", str(tmp_path / "l.db.zst")], capsys)
    assert code == 0, err
    for policy in ("contract", "cheapest"):
        db = tmp_path / f"l-{policy}.db.zst"
        assert is_sealed(db) and Path(f"{db}.pub").exists()
    assert not list(tmp_path.glob("l*.db")) and not list(tmp_path.glob(".o.work-*"))
