"""The simulated workload without Ray (scheduler/runtime/steps.py): told to stop, it checkpoints the step it is on and exits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from scheduler.runtime.steps import simulate_steps

PLACE = {"cloud": "azure", "region": "eastus"}


def test_a_stop_request_checkpoints_the_last_completed_step_and_returns(tmp_path: Path) -> None:
    stop = threading.Event()
    spec = {"name": "t", "cls": "training", "workload": {"steps": 1000, "stepSeconds": 0.01, "checkpointEvery": 500}}
    threading.Timer(0.2, stop.set).start()
    result = simulate_steps(spec, PLACE, tmp_path, stop)
    done = result["steps"]
    assert result["stopped"] and 5 < done < 500  # stopped long before the periodic checkpoint
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == done
    again = simulate_steps({**spec, "workload": {**spec["workload"], "steps": done + 3}}, PLACE, tmp_path, threading.Event())
    assert again["resumed_from"] == done and again["steps"] == done + 3 and not (tmp_path / "latest.json").exists()
