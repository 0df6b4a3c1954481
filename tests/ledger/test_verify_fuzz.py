"""`audit verify` has a one-line verdict for any bytes: random files, truncated SQLite,
wrong tables, and every single-byte change to any record or checkpoint of a real ledger."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.cli import main
from scheduler.ledger.verify import verify_ledger
from tests.builders import a_job, two_clouds
from tests.ledger.forgery import World, raw_sql


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(tmp_path_factory.mktemp("fuzz"), two_clouds(azure_h100=8))
    for i in range(3):
        w.op(lambda e, i=i: e.submit(a_job().named(f"j{i}").gpus(8).obj()))
    w.op(lambda e: e.release("j0"))
    w.close()
    return w


def verify_cli(db: Path, w: World, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "verify", "--db", str(db), "--public-key", str(w.pub)])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), (out + err).strip()


def test_verify_cli_ok(small: World, capsys: pytest.CaptureFixture[str]) -> None:
    main(["audit", "verify", "--db", str(small.db), "--public-key", str(small.pub)])
    assert "OK: " in capsys.readouterr().out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=4096))
def test_random_bytes_are_one_line(small: World, tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    db = tmp_path_factory.mktemp("rand") / "x.db"
    db.write_bytes(blob)
    line = verify_ledger(db, small.pub).line()
    assert line.startswith("FAIL: ") and "\n" not in line


@pytest.mark.parametrize("cut", [0, 100, 1024, 4096, 8192])
def test_truncated_sqlite_files_are_one_line(small: World, tmp_path: Path, cut: int, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    db.write_bytes(small.db.read_bytes()[:cut])
    code, text = verify_cli(db, small, capsys)
    assert code == 1 and len(text.splitlines()) == 1 and "FAIL" in text and "Traceback" not in text, text


@pytest.mark.parametrize(
    "script",
    [
        "CREATE TABLE ledger (seq INTEGER PRIMARY KEY, at REAL, kind TEXT, payload TEXT, prev_hash TEXT, hash TEXT);",
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, leaf BLOB, note TEXT); CREATE TABLE checkpoints (size INTEGER, body BLOB, signature BLOB);",
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, leaf BLOB, mac BLOB, x); CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, size, note);",
        "CREATE TABLE records (a, b); CREATE TABLE checkpoints (size, body, signature);",
        "CREATE TABLE something (x);",
        "CREATE VIEW records AS SELECT 1 AS seq, x'00' AS leaf; CREATE TABLE checkpoints (size, body, signature);",
    ],
    ids=["v1", "v2-extra-column", "v3-extra-column", "wrong-columns", "other-table", "view"],
)
def test_wrong_tables_are_one_line(small: World, tmp_path: Path, script: str) -> None:
    db = tmp_path / "w.db"
    conn = sqlite3.connect(db)
    conn.executescript(script)
    conn.close()
    line = verify_ledger(db, small.pub).line()
    assert line.startswith("FAIL: ") and "\n" not in line, line


@pytest.mark.parametrize("value", ["42", "'text'", "NULL", "x'00ff'", "-1.5"])
def test_odd_cell_types_are_one_line(small: World, tmp_path: Path, value: str) -> None:
    for col, table in (("leaf", "records"), ("seq", "records"), ("note", "checkpoints"), ("size", "checkpoints")):
        db = tmp_path / f"{table}-{col}.db"
        shutil.copy(small.db, db)
        try:
            raw_sql(db, f"UPDATE {table} SET {col} = {value} WHERE rowid = (SELECT max(rowid) FROM {table})")
        except sqlite3.IntegrityError:  # an INTEGER PRIMARY KEY holds integers only
            continue
        line = verify_ledger(db, small.pub).line()
        assert line.startswith("FAIL: ") and "\n" not in line, (col, line)


def _cells(w: World) -> list[tuple[str, str, int, bytes]]:
    conn = sqlite3.connect(w.db)
    out = [("records", "leaf", s, bytes(v)) for s, v in conn.execute("SELECT seq, leaf FROM records")]
    out += [("checkpoints", "note", s, bytes(v)) for s, v in conn.execute("SELECT id, note FROM checkpoints")]
    conn.close()
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_in_any_record_or_checkpoint_is_detected(small: World, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    cells = _cells(small)
    table, col, key, value = data.draw(st.sampled_from(cells))
    i = data.draw(st.integers(0, len(value) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != value[i]))
    db = tmp_path_factory.mktemp("byte") / "b.db"
    shutil.copy(small.db, db)
    keycol = "seq" if table == "records" else "id"
    raw_sql(db, f"UPDATE {table} SET {col} = ? WHERE {keycol} = ?", value[:i] + bytes([new]) + value[i + 1 :], key)
    line = small.verify().line() if db == small.db else verify_ledger(db, trust=small.trust()).line()
    assert line.startswith("FAIL: ") and "\n" not in line, (table, col, key, i, line)
