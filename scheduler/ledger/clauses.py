"""The contract's commercial clauses, re-derived from the records: spill ranking and prices.

The invariant checker (``scheduler.invariants``) proves the ROFR order, the pins, the
holder's answers and capacity. This module adds what it leaves to trust: a spill goes to the
best quote **in the contract's ranking** (``scoring.spill``: price-first, start-first or
weighted), every quote offers the **pinned catalog's** price and start-up time, and every
placement is billed **at the quoted price** (a spill at its quote's, an accepted offer at the
holder's catalog price, a matched one at the competing price it matched, a preemption at
the holder's catalog price). An offer names the contract's window and an answer inside it
arrives within it.

It shares nothing with the engine's decision path (it re-implements the ranking from the
contract text) and reads records through attributes only, so ``audit verify`` feeds it the
typed records it streams and ``check-proof`` one job's records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TOLERANCE = 1e-9
SPILL_VIAS = frozenset({"after-decline", "after-lapse", "holder-not-offered"})
#: The rule names this module reports (beside the invariant checker's).
RULES = ("spill-ranking", "price", "offer-window")


class ClauseViolation(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule, self.message = rule, message


def _same(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


@dataclass
class _Job:
    gpu_type: str
    cls: str
    regions: tuple[str, ...]
    clouds: tuple[str, ...] | None
    jurisdiction: str | None
    quotes: dict[int, list[tuple[str, str, float, float]]] = field(default_factory=dict)
    dropped: dict[int, set[str]] = field(default_factory=dict)
    competing: dict[int, float | None] = field(default_factory=dict)
    reason: dict[int, str] = field(default_factory=dict)


@dataclass
class ClauseChecker:
    """Feed records in order (``check``); a broken clause raises ``ClauseViolation``."""

    holder: str = ""
    window: float = 0.0
    spill: str = "price-first"
    weights: tuple[float, float] = (1.0, 0.0)
    pins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prices: dict[tuple[str, str], float] = field(default_factory=dict)  # (cloud, gpu type) -> USD/GPU-h
    startup: dict[str, float] = field(default_factory=dict)
    pools: dict[tuple[str, str, str], tuple[int, str]] = field(default_factory=dict)  # pool -> (catalog order, jurisdiction)
    jobs: dict[str, _Job] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._handlers: dict[str, Callable[[Any], None]] = {
            "configured": self._configured,
            "reconfigured": self._contract,
            "submitted": self._submitted,
            "quoted": self._quoted,
            "offered": self._offered,
            "answered": self._answered,
            "placed": self._placed,
        }

    def check(self, kind: str, rec: Any) -> None:
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(rec)

    # ------------------------------------------------------------------ configuration

    def _configured(self, rec: Any) -> None:
        self.prices.clear()
        self.startup.clear()
        self.pools.clear()
        order = 0
        for b in rec.catalog["spec"]["backends"]:
            name = b["name"]
            self.startup[name] = float(b.get("startupSeconds", 0.0))
            for gpu_type, price in b["prices"].items():
                self.prices[(name, gpu_type)] = float(price)
            for r in b["regions"]:
                for gpu_type in r["gpus"]:
                    # Catalog order among pools of one GPU type: the backends' and regions' list order
                    # (a region has one pool per type), what the engine breaks last ties on.
                    self.pools[(name, r["name"], gpu_type)] = (order, r.get("jurisdiction") or "")
                    order += 1
        self._contract(rec)

    def _contract(self, rec: Any) -> None:
        spec = rec.contract["spec"]
        self.holder = spec["rofr"]["holder"]
        self.window = float(spec["rofr"]["windowSeconds"])
        scoring = spec.get("scoring") or {}
        self.spill = scoring.get("spill", "price-first")
        weights = scoring.get("weights") or {}
        self.weights = (float(weights.get("price", 1.0)), float(weights.get("startSeconds", 0.0)))
        self.pins = {str(c): tuple(v) for c, v in (spec.get("pins") or {}).items()}

    # ------------------------------------------------------------------ a job's attempts

    def _submitted(self, rec: Any) -> None:
        spec = rec.spec or {}
        clouds = spec.get("clouds")
        self.jobs[rec.job] = _Job(
            rec.gpu_type, rec.cls, tuple(spec.get("regions") or ()), tuple(clouds) if clouds else None, spec.get("jurisdiction") or None
        )

    def _job(self, name: str) -> _Job | None:
        return self.jobs.get(name)  # an unknown job is the invariant checker's verdict (unknown-job)

    def _quoted(self, rec: Any) -> None:
        job = self._job(rec.job)
        if job is None:
            return
        seen: set[str] = set()
        quotes = []
        for cloud, region, price, start in rec.quotes:
            if cloud == self.holder:
                raise ClauseViolation("spill-ranking", f"{rec.job} attempt {rec.attempt}: the holder {cloud} is among the spill quotes")
            if cloud in seen:
                raise ClauseViolation("spill-ranking", f"{rec.job} attempt {rec.attempt}: two quotes from {cloud}")
            seen.add(cloud)
            if (cloud, region, job.gpu_type) not in self.pools:
                raise ClauseViolation("price", f"{rec.job} attempt {rec.attempt}: quote from {cloud}/{region}, which has no {job.gpu_type} pool in the catalog")
            listed = self.prices[(cloud, job.gpu_type)]
            if not _same(price, listed):
                raise ClauseViolation("price", f"{rec.job} attempt {rec.attempt}: {cloud} quoted ${price:g}/GPU-h for {job.gpu_type}; the catalog says ${listed:g}")
            if not _same(start, self.startup[cloud]):
                raise ClauseViolation("price", f"{rec.job} attempt {rec.attempt}: {cloud} quoted a start in {start:g}s; the catalog says {self.startup[cloud]:g}s")
            quotes.append((cloud, region, float(price), float(start)))
        job.quotes[rec.attempt] = quotes
        job.dropped[rec.attempt] = {c for c, _ in rec.dropped}

    def _offered(self, rec: Any) -> None:
        if not _same(rec.window_seconds, self.window):
            raise ClauseViolation("offer-window", f"offer of {rec.job} gives {rec.window_seconds:g}s to answer; the contract says {self.window:g}s")
        job = self._job(rec.job)
        if job is not None:
            job.competing[rec.attempt] = rec.competing_price

    def _answered(self, rec: Any) -> None:
        if rec.answer in ("accepted", "declined") and rec.response_seconds > self.window + TOLERANCE:
            raise ClauseViolation(
                "offer-window", f"{rec.holder} {rec.answer} {rec.job} after {rec.response_seconds:g}s, outside the {self.window:g}s window (a lapse)"
            )
        job = self._job(rec.job)
        if job is not None:
            job.reason[rec.attempt] = rec.reason

    def _rank(self, job: _Job, q: tuple[str, str, float, float]) -> tuple[float, ...]:
        """The contract's ranking (lower first), with the engine's documented tie-breaks: region preference, catalog order."""
        cloud, region, price, start = q
        locality = float(job.regions.index(region)) if region in job.regions else 0.0
        order = float(self.pools[(cloud, region, job.gpu_type)][0])
        if self.spill == "start-first":
            return (start, price, locality, order)
        if self.spill == "weighted":
            wp, ws = self.weights
            return (wp * price + ws * start, price, start, locality, order)
        return (price, start, locality, order)

    def _candidates(self, job: _Job) -> set[str]:
        """The non-holder clouds the contract and the job allow that have a pool of its type (each must be quoted or say why not)."""
        pinned = self.pins.get(job.cls)
        out = set()
        for cloud, region, gpu_type in self.pools:
            if cloud == self.holder or gpu_type != job.gpu_type:
                continue
            if (pinned is not None and cloud not in pinned) or (job.clouds is not None and cloud not in job.clouds):
                continue
            if job.regions and region not in job.regions:
                continue
            if job.jurisdiction and self.pools[(cloud, region, gpu_type)][1] != job.jurisdiction:
                continue
            out.add(cloud)
        return out

    def _placed(self, rec: Any) -> None:
        job = self._job(rec.job)
        if job is None:
            return
        attempt, cloud, via, price = rec.attempt, rec.cloud, rec.via, rec.price
        if via in SPILL_VIAS:
            quotes = job.quotes.get(attempt)
            if quotes is None:
                raise ClauseViolation("spill-ranking", f"{rec.job} spilled to {cloud} in attempt {attempt} without quoting the other clouds")
            mine = [q for q in quotes if q[0] == cloud and q[1] == rec.region]
            if not mine:
                raise ClauseViolation("spill-ranking", f"{rec.job} spilled to {cloud}/{rec.region}, which did not quote in attempt {attempt}")
            best = min(quotes, key=lambda q: self._rank(job, q))
            if best is not mine[0] and self._rank(job, best) < self._rank(job, mine[0]):
                raise ClauseViolation(
                    "spill-ranking",
                    f"{rec.job} spilled to {cloud} (${mine[0][2]:g}/GPU-h, start {mine[0][3]:g}s), but {best[0]} "
                    f"(${best[2]:g}/GPU-h, start {best[3]:g}s) ranks first under the contract's {self.spill} ranking",
                )
            gang_too_large = {c for c, why in rec.not_used if why.startswith("gang-too-large")}
            silent = self._candidates(job) - {q[0] for q in quotes} - job.dropped.get(attempt, set()) - gang_too_large
            if silent:
                raise ClauseViolation(
                    "spill-ranking", f"{rec.job} spilled in attempt {attempt} without a quote or a reason from {', '.join(sorted(silent))}"
                )
            owed, what = mine[0][2], f"its quote from {cloud}"
        elif via == "rofr-accepted" and job.reason.get(attempt) == "matched":
            competing = job.competing.get(attempt)
            if competing is None:
                raise ClauseViolation("price", f"{rec.job} matched in attempt {attempt} without a competing quote in the offer")
            owed, what = competing, "the competing price the holder matched"
        else:
            listed = self.prices.get((cloud, rec.gpu_type))
            if listed is None:
                raise ClauseViolation("price", f"{rec.job} placed on {cloud}, which lists no price for {rec.gpu_type}")
            owed, what = listed, f"{cloud}'s catalog price"
        if not _same(price, owed):
            raise ClauseViolation("price", f"{rec.job} placed on {cloud} at ${price:g}/GPU-h; {what} is ${owed:g}")
