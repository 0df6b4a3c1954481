"""The simulated workload's steps and checkpoints, without Ray (the Ray actor is ``workload.py``).

Kept apart so that tests and tools can run it without importing Ray: a process that imports
Ray before it joins a cluster freezes Ray's authentication settings (token mode off).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


def save_checkpoint(ckpt: Path, step: int, placement: dict[str, str]) -> None:
    tmp = ckpt.with_suffix(".tmp")
    tmp.write_text(json.dumps({"step": step, "cloud": placement["cloud"], "region": placement["region"]}))
    tmp.replace(ckpt)  # atomic: a kill mid-write leaves the previous checkpoint


def simulate_steps(
    spec: dict[str, Any], placement: dict[str, str], checkpoint_dir: Path, stop: threading.Event | None = None
) -> dict[str, Any]:
    w = spec.get("workload") or {}
    steps, step_s, every = int(w.get("steps", 10)), float(w.get("stepSeconds", 0.1)), int(w.get("checkpointEvery", 5))
    fail_at = w.get("failAtStep")
    cls, name = spec["cls"], spec["name"]
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_dir / "latest.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    if start:
        print(f"[{name}] resuming from checkpoint at step {start}", flush=True)
    where = f"{placement['cloud']}/{placement['region']}"
    for step in range(start + 1, steps + 1):
        if stop is not None and stop.wait(step_s):  # told to stop: checkpoint what is done, then exit
            if step - 1 > start:
                save_checkpoint(ckpt, step - 1, placement)
            print(f"[{name}] stop requested: checkpoint saved at step {step - 1}", flush=True)
            return {"steps": step - 1, "resumed_from": start, "exit_code": 0, "stopped": True}
        if stop is None:
            time.sleep(step_s)
        if fail_at is not None and step == int(fail_at):
            raise RuntimeError(f"{name}: injected failure at step {step}")
        if cls == "training":
            print(f"[{name}] step {step}/{steps} loss={2.5 / (1 + 0.1 * step):.3f} on {where}", flush=True)
        elif cls == "inference":
            print(f"[{name}] batch {step}/{steps}: 512 prompts done on {where}", flush=True)
        else:
            print(f"[{name}] serving tick {step}/{steps}: {40 + step} req/s p50=180ms on {where}", flush=True)
        if step % every == 0 or step == steps:
            save_checkpoint(ckpt, step, placement)
            print(f"[{name}] checkpoint saved at step {step}", flush=True)
    ckpt.unlink(missing_ok=True)  # finished: the next run of this name starts fresh
    return {"steps": steps, "resumed_from": start, "exit_code": 0}
