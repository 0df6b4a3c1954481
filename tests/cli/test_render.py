"""``-o json`` and ``-o ndjson``: decisions encoded by msgspec (no private stdlib encoder), one
decision per line, each line exactly ``Decision.to_dict`` as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import pytest

from scheduler.decision import Decision
from scheduler.paths import examples_dir
from scheduler.render import decisions_json, decisions_ndjson
from tests.cli_runner import run

MIXED = examples_dir() / "jobs" / "mixed.yaml"
ROOT = Path(__file__).resolve().parents[2]




def _finite(x: object) -> object:
    """``x`` as strict JSON holds it: a non-finite float is null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


ODD = Decision(
    job='q"uo\\te\u00e9\u2603\n\t\x01',
    cls="training",
    outcome="queued",
    gpu_type="H100",
    gpus=3,
    holder="azure",
    rofr_answer="declined",
    rofr_reason="",
    price=0.1 + 0.2,
    reason="no-capacity",
    detail="H100 0/512 free \U0001f600",
    dropped=(("aws", 'why "not"'),),
    history=((1e-7, "placed", "", "", "x"), (1.5e300, "evicted", "aws", "r", "")),
)


@pytest.mark.parametrize("explain", [False, True], ids=["plain", "explain"])
def test_plan_json_is_an_array_with_one_to_dict_per_line(capsys: pytest.CaptureFixture[str], explain: bool) -> None:
    code, out, err = run(["plan", str(MIXED), "-o", "json", *(["--explain"] if explain else [])], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 13
    lines = out.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == len(rows) + 2
    for text, row in zip(lines[1:-1], rows, strict=True):
        assert text == "  " + msgspec.json.encode(row).decode() + ("," if row is not rows[-1] else "")


def test_plan_ndjson_is_one_decision_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    _, as_json, _ = run(["plan", str(MIXED), "-o", "json", "--explain"], capsys)
    code, out, err = run(["plan", str(MIXED), "-o", "ndjson", "--explain"], capsys)
    assert code == 0, err
    assert out.endswith("\n") and [json.loads(ln) for ln in out.splitlines()] == json.loads(as_json)


@pytest.mark.parametrize("explain", [False, True])
def test_awkward_values_round_trip(explain: bool) -> None:
    plain = ODD._replace(job="plain", price=None, reason=None, detail=None)
    nonfinite = ODD._replace(job="nan", price=float("nan")), ODD._replace(job="inf", price=float("inf"))
    decisions = [ODD, plain, *nonfinite]
    want = [_finite(d.to_dict(explain)) for d in decisions]
    assert json.loads(decisions_json(decisions, explain)) == want
    assert [json.loads(x) for x in decisions_ndjson(decisions, explain).splitlines()] == want
    assert json.loads(decisions_json([ODD], explain))[0]["job"] == ODD.job  # escapes survive
    assert decisions_json([]) == "[]" and decisions_ndjson([]) == ""


def test_no_private_stdlib_encoder_is_used() -> None:
    users = [p for p in (ROOT / "scheduler").rglob("*.py") if "c_make_encoder" in p.read_text() or "json.encoder" in p.read_text()]
    assert users == []
