"""The scheduler service (the actor's body) without Ray: batching, idempotent retries,
recovery from the ledger, and releasing jobs whose placement group vanished."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from scheduler.ledger import Ledger
from scheduler.runtime.service import SchedulerService
from tests.builders import a_contract, two_clouds
from tests.integration.conftest import job_doc


class Svc:
    def __init__(self, path: Path, pgs: dict[str, str]) -> None:
        self.pgs = pgs
        self.svc = SchedulerService(
            two_clouds(azure_h100=8).model_dump(mode="json", by_alias=True),
            a_contract().model_dump(mode="json", by_alias=True),
            str(path),
            metrics_port=None,
            pg_lister=lambda: dict(self.pgs),
        )
        self.loop = asyncio.new_event_loop()

    def __call__(self, method: str, *args: Any) -> Any:
        return self.loop.run_until_complete(getattr(self.svc, method)(*args))


def test_bad_batch_changes_nothing_and_retries_are_idempotent(tmp_path: Path) -> None:
    s = Svc(tmp_path / "l.db", {})
    bad = s("submit", [job_doc("ok", gpus=8), job_doc("bad", gpus=8, clouds=["oci"])])
    assert not bad["ok"] and "ROFR holder" in bad["error"] and s("status", None) == []
    first = s("submit", [job_doc("a", gpus=8)])
    again = s("submit", [job_doc("a", gpus=8)])  # the same call retried after an actor restart
    assert first["decisions"] == again["decisions"]
    events = [e.kind for e in Ledger(tmp_path / "l.db", readonly=True).events()]
    assert events.count("submitted") == 1


def test_a_vanished_placement_group_releases_the_job_even_after_a_restart(tmp_path: Path) -> None:
    pgs = {"pg-a": "CREATED"}
    s = Svc(tmp_path / "l.db", pgs)
    s("submit", [job_doc("a", gpus=8), job_doc("b", gpus=8)])  # b waits behind a on azure... or spills
    s("bind", "a", "pg-a")
    assert s.svc.reconcile() == 0
    # The actor restarts (a new service on the same ledger); then the driver dies.
    s2 = Svc(tmp_path / "l.db", pgs)
    s2("ping")
    assert s2.svc.engine is not None and s2.svc.engine.bound_jobs() == {"a": (1, "pg-a")}
    pgs.clear()
    assert s2.svc.reconcile() == 1
    assert s2("status", "a")[0]["outcome"] == "stopped"
    kinds = [(e.kind, getattr(e, "reason", None)) for e in Ledger(tmp_path / "l.db", readonly=True).events() if getattr(e, "job", None) == "a"]
    assert ("bound", None) in kinds and kinds[-1] == ("released", "stopped")
    assert Ledger(tmp_path / "l.db", readonly=True, home=tmp_path).verify().ok
