"""What the engine answers for a placement attempt, and how a job stands afterwards."""

from __future__ import annotations

from typing import Any, NamedTuple

HistoryEntry = tuple[float, str, str, str, str]  # (at, placed | evicted | ended, cloud, region, detail)


class Decision(NamedTuple):
    """The outcome of one placement attempt (or a job's current standing).

    Immutable like a frozen dataclass, but a tuple: the engine builds one per submission and
    release, and a tuple is built ~4x faster (a hot path at 100k-job batches).
    """

    job: str
    cls: str
    outcome: str  # placed | queued | finished | failed | stopped | cancelled
    gpu_type: str
    gpus: int
    holder: str
    rofr_answer: str
    rofr_reason: str
    cloud: str | None = None  # the current placement; for an ended job the last one
    region: str | None = None
    price: float | None = None
    via: str | None = None
    reason: str | None = None
    detail: str | None = None
    attempt: int = 0
    dropped: tuple[tuple[str, str], ...] = ()
    version: int = 0  # bumped by every assignment change (placed, evicted, ended): what drivers watch
    history: tuple[HistoryEntry, ...] = ()
    planned: tuple[str, str, float] | None = None  # a queued job's planned start: (cloud, region, time)
    waiting: str | None = None  # a queued job's current reason: its planned start, or what it waits for

    def to_dict(self, explain: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.job,
            "class": self.cls,
            "outcome": self.outcome,
            "cloud": self.cloud,
            "region": self.region,
            "gpuType": self.gpu_type,
            "gpus": self.gpus,
            "priceUsdPerHour": round(self.price * self.gpus, 4) if self.price is not None else None,
            "priceUsdPerGpuHour": self.price,
            "via": self.via,
            "rofr": {"holder": self.holder, "answer": self.rofr_answer, "reason": self.rofr_reason},
            "attempt": self.attempt,
            "version": self.version,
        }
        if self.reason is not None:
            out["reason"] = self.reason
            out["detail"] = self.detail
        if self.waiting is not None:
            out["waiting"] = self.waiting
            out["plannedStart"] = (
                {"cloud": self.planned[0], "region": self.planned[1], "at": self.planned[2]} if self.planned else None
            )
        if explain:
            out["notUsed"] = [{"cloud": c, "why": why} for c, why in self.dropped]
            out["history"] = [
                {"at": at, "what": what, "cloud": cloud or None, "region": region or None, "detail": detail}
                for at, what, cloud, region, detail in self.history
            ]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        """The inverse of ``to_dict`` (the actor's wire format), for printing on the client side."""
        rofr = d["rofr"]
        return cls(
            job=d["job"],
            cls=d["class"],
            outcome=d["outcome"],
            gpu_type=d["gpuType"],
            gpus=d["gpus"],
            holder=rofr["holder"],
            rofr_answer=rofr["answer"],
            rofr_reason=rofr["reason"],
            cloud=d.get("cloud"),
            region=d.get("region"),
            price=d.get("priceUsdPerGpuHour"),
            via=d.get("via"),
            reason=d.get("reason"),
            detail=d.get("detail"),
            attempt=int(d.get("attempt", 0)),
            dropped=tuple((x["cloud"], x["why"]) for x in d.get("notUsed", [])),
            version=int(d.get("version", 0)),
            planned=(d["plannedStart"]["cloud"], d["plannedStart"]["region"], float(d["plannedStart"]["at"])) if d.get("plannedStart") else None,
            waiting=d.get("waiting"),
            history=tuple(
                (float(h["at"]), str(h["what"]), h.get("cloud") or "", h.get("region") or "", str(h.get("detail", "")))
                for h in d.get("history", [])
            ),
        )

    @property
    def last_eviction(self) -> HistoryEntry | None:
        """The eviction that preceded the current placement, if it was re-placed (a move)."""
        for entry in reversed(self.history[:-1] if self.history and self.history[-1][1] == "placed" else ()):
            if entry[1] == "evicted":
                return entry
            if entry[1] == "placed":
                return None
        return None

    def line(self) -> str:
        """The one-line summary the Ray driver and the CLI print."""
        rofr = f"{self.holder} {self.rofr_answer}" + (f": {self.rofr_reason}" if self.rofr_reason else "")
        if self.outcome == "placed":
            where = f"{self.cloud}/{self.region} ({self.gpus}x {self.gpu_type}, ${self.price:.2f}/GPU-h)"
            evicted = self.last_eviction
            if evicted is not None:
                return f"moved {self.job} to {where}: {evicted[4]} on {evicted[2]}/{evicted[3]}; {rofr}"
            if self.via == "preemption":
                return f"placed {self.job} on {where} by preempting lower-priority movable work ({rofr})"
            return f"placed {self.job} on {where}: {rofr}"
        if self.outcome == "queued":
            now = f"; {self.waiting}" if self.waiting else ""
            return f"queued {self.job} ({self.gpus}x {self.gpu_type}): {self.reason}: {self.detail}{now}"
        where = f" (last on {self.cloud}/{self.region})" if self.cloud else ""
        return f"{self.outcome} {self.job}{where}"
