"""The shipped Prometheus config, rules and Grafana dashboard are valid (promtool, JSON)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scheduler.runtime.promlocal import DEPLOY, render_config

ROOT = Path(__file__).resolve().parents[2]
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs Debian's prometheus)")


@needs_promtool
def test_promtool_checks_the_rendered_config(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    shutil.copyfile(DEPLOY / "rules" / "mcsched-rules.yml", rules)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(render_config("127.0.0.1:9464", rules, "5s", str(tmp_path)))
    r = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "127.0.0.1:9464" in cfg.read_text() and "evaluation_interval: 5s" in cfg.read_text()


@needs_promtool
def test_promtool_check_and_unit_test_rules() -> None:
    r = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "rules" / "mcsched-rules.yml")], capture_output=True, text=True)
    count = sum(len(g["rules"]) for g in yaml.safe_load((DEPLOY / "rules" / "mcsched-rules.yml").read_text())["groups"])
    assert r.returncode == 0 and f"SUCCESS: {count} rules found" in r.stdout and count >= 11, r.stdout + r.stderr
    t = subprocess.run(["promtool", "test", "rules", "mcsched-rules.test.yml"], cwd=DEPLOY / "tests", capture_output=True, text=True)
    assert t.returncode == 0 and "SUCCESS" in t.stdout, t.stdout + t.stderr


def test_dashboard_is_provisionable_and_covers_the_required_panels() -> None:
    dash = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "mcsched.json").read_text())
    assert dash["uid"] == "mcsched-overview"
    titles = " | ".join(p["title"] for p in dash["panels"])
    for needed in ["Placements by cloud", "ROFR answers", "decline", "Azure share of GPU-hours", "Pending jobs by class and reason",
                   "GPU utilisation per cloud", "Cost rate per cloud", "Decision latency", "Queue wait", "Compliance",
                   "Serve: replicas by cloud", "Serve: requests by status", "Serve: time to first token", "Serve: scale events"]:
        assert needed in titles, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "cloud"}
    for p in dash["panels"]:
        assert p["targets"] and all("mcsched" in t["expr"] for t in p["targets"])
        assert p["datasource"]["uid"] == "${datasource}"
