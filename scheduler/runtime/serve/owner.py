"""The scheduler actor owns every served model: its control loop runs there, not in a driver.

Why: a Serve application deployed by a Ray job driver lived only as long as that driver (its
mailbox actor died with it and the gateway swept the replicas). Kubernetes keeps a
Deployment alive when ``kubectl`` exits; here the detached, restartable scheduler actor
plays the controller-manager:

- ``python -m scheduler run api.yaml`` hands the service's document to the actor
  (``SchedulerService.serve_start``) and then only *follows* it, printing the controller's
  lines. Killing that driver (even ``kill -9``) changes nothing for clients;
  ``ray job stop`` (SIGTERM, a deliberate stop) and ``mcsched cancel`` undeploy it.
- The actor runs one controller thread per service (``controller.own_service``) and keeps
  the services it owns in ``serving.json`` beside the ledger. A restarted actor reads that
  file and resumes each service: the controller adopts the replicas the books hold placed
  and the Serve applications already running (clients keep being answered meanwhile: the
  gateway routes with its last table and the mailbox actors are detached).

This module has no Ray import: the thread body is injected (tests pass a plain function).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("mcsched.serve.owner")
SERVING_FILE = "serving.json"
MAX_LINES = 1000  # per service: a driver that follows late sees at most the last MAX_LINES lines


class Runner(Protocol):
    """The body of a service's thread: serve ``doc`` until it ends; returns the end reason."""

    def __call__(self, doc: dict[str, Any], endpoint: tuple[str, int], say: Callable[[str], None],
                 *, resume: bool, stop: Callable[[], str | None]) -> str: ...


@dataclass
class Owned:
    """One service the actor owns: its document, its endpoint, its log, how it ended."""

    doc: dict[str, Any]
    endpoint: tuple[str, int]
    stopping: str | None = None
    ended: str | None = None
    lines: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    next_line: int = 0
    thread: threading.Thread | None = None


class Owner:
    """The served models of one scheduler actor, their threads and the file that outlives it."""

    def __init__(self, state_dir: str | os.PathLike[str], runner: Runner) -> None:
        self.path = Path(state_dir) / SERVING_FILE
        self._runner = runner
        self._lock = threading.Lock()
        self._owned: dict[str, Owned] = {}
        self.log_id = uuid.uuid4().hex  # this owner's line numbering: a follower of a restarted actor starts again at 0

    # ------------------------------------------------------------------ the file

    def _load(self) -> dict[str, Owned]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s unreadable (%s): no served model is resumed", self.path, exc)
            return {}
        out: dict[str, Owned] = {}
        for job, entry in (raw.items() if isinstance(raw, dict) else ()):
            try:
                host, port = entry["endpoint"]
                out[str(job)] = Owned(dict(entry["doc"]), (str(host), int(port)), stopping=entry.get("stopping"))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("%s: entry %r is malformed (%s): not resumed", self.path, job, exc)
        return out

    def _save(self) -> None:
        """Called with the lock held: live services only, written atomically."""
        live = {job: {"doc": o.doc, "endpoint": list(o.endpoint), "stopping": o.stopping}
                for job, o in self._owned.items() if o.ended is None}
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(live, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot save %s: %s (a restarted actor would not resume these services)", self.path, exc)

    # ------------------------------------------------------------------ the actor's calls

    def resume(self) -> list[str]:
        """After a (re)start: run every service the file lists; a stopping one only finishes its stop."""
        with self._lock:
            found = {job: o for job, o in self._load().items() if job not in self._owned}
            self._owned.update(found)
        for job, owned in found.items():
            self._spawn(job, owned, resume=True)
        return sorted(found)

    def start(self, doc: dict[str, Any], endpoint: tuple[str, int]) -> bool:
        """Own ``doc``'s service; False if it is served already (the caller then follows it)."""
        job = str(doc["metadata"]["name"])
        with self._lock:
            current = self._owned.get(job)
            if current is not None and current.ended is None:
                return False
            owned = self._owned[job] = Owned(doc, endpoint)
            self._save()
        self._spawn(job, owned, resume=False)
        return True

    def stop(self, job: str, reason: str) -> bool:
        """Ask ``job``'s controller to undeploy and release; False if it is not served here."""
        with self._lock:
            owned = self._owned.get(job)
            if owned is None or owned.ended is not None:
                return False
            owned.stopping = owned.stopping or reason
            self._save()
        return True

    def follow(self, job: str, since: int) -> dict[str, Any]:
        """The controller's lines from number ``since`` on, and the end reason once it ended."""
        with self._lock:
            owned = self._owned.get(job)
            if owned is None:
                return {"known": False, "lines": [], "next": since, "ended": None, "log": self.log_id}
            return {"known": True, "lines": [text for n, text in owned.lines if n >= since],
                    "next": owned.next_line, "ended": owned.ended, "log": self.log_id}

    def serving(self) -> dict[str, str]:
        """job -> ``serving`` / ``stopping`` / how it ended."""
        with self._lock:
            return {job: o.ended or ("stopping" if o.stopping else "serving") for job, o in self._owned.items()}

    # ------------------------------------------------------------------ the threads

    def _spawn(self, job: str, owned: Owned, *, resume: bool) -> None:
        owned.thread = threading.Thread(target=self._run, args=(job, owned, resume), name=f"mcsched-serve:{job}", daemon=True)
        owned.thread.start()

    def _say(self, job: str, owned: Owned, text: str) -> None:
        log.info("%s", text)
        with self._lock:
            owned.lines.append((owned.next_line, text))
            owned.next_line += 1

    def _run(self, job: str, owned: Owned, resume: bool) -> None:
        try:
            reason = self._runner(owned.doc, owned.endpoint, lambda text: self._say(job, owned, text),
                                  resume=resume, stop=lambda: owned.stopping)
        except Exception as exc:  # the thread must always record an end, or a follower waits forever
            log.exception("service %s failed", job)
            self._say(job, owned, f"{job}: serving failed: {type(exc).__name__}: {exc}")
            reason = "failed"
        with self._lock:
            owned.ended = reason
            self._save()
