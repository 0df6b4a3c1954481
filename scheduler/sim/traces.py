"""Workload trace readers: Alibaba GPU v2023 (openb), Azure LLM inference, and generic CSV.

Each reader yields ``TraceJob`` rows sorted by arrival. Bad rows stop the read at the
first one (file, line, column and why) unless ``skip_bad_rows`` is set, in which case they
are counted in ``ReadStats`` and skipped.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from scheduler.errors import TraceError

FORMATS = ("alibaba-openb", "azure-llm", "csv")


@dataclass(frozen=True, slots=True)
class TraceJob:
    name: str
    arrival: float
    gpus: int
    duration: float
    cls: str
    gpu_type: str = "H100"


@dataclass
class ReadStats:
    rows: int = 0
    jobs: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, object]:
        return {"rows": self.rows, "jobs": self.jobs, "skipped": dict(self.skipped)}


class _Rows:
    """CSV rows with their line numbers and required-column checks."""

    def __init__(self, path: Path, required: list[str]) -> None:
        self.path = path
        try:
            self._fh = path.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise TraceError(f"{path}: cannot read ({exc.strerror})") from None
        self.reader = csv.DictReader(self._fh)
        header = self.reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            self._fh.close()
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)} (header has {', '.join(header) or 'nothing'})")

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        try:
            for row in self.reader:
                yield self.reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(f"{self.path}:{self.reader.line_num}: unreadable row ({exc})") from None
        finally:
            self._fh.close()


def _bad(path: Path, line: int, column: str, why: str, stats: ReadStats, skip: bool) -> None:
    if not skip:
        raise TraceError(f"{path}:{line}: {column}: {why} (use --skip-bad-rows to count and skip)")
    stats.skipped[f"bad {column}"] += 1


def _num(value: str | None) -> float:
    if value is None or value.strip() == "":
        raise ValueError("empty")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError("not finite")
    return out


def read_alibaba(path: Path, *, skip_bad_rows: bool = False, gpu_type: str = "H100", stats: ReadStats | None = None) -> list[TraceJob]:
    """openb pods: arrival = creation_time; gang = ceil(num_gpu x gpu_milli/1000) whole GPUs.

    CPU-only pods and pods that were never scheduled are skipped (counted). LS pods become
    api-serving, Burstable/Guaranteed inference, BE training (the traces README's mapping).
    """
    stats = stats if stats is not None else ReadStats()
    cols = ["name", "num_gpu", "gpu_milli", "qos", "creation_time", "deletion_time", "scheduled_time"]
    jobs: list[TraceJob] = []
    for line, row in _Rows(path, cols):
        stats.rows += 1
        try:
            num_gpu = int(_num(row["num_gpu"]))
        except ValueError:
            _bad(path, line, "num_gpu", f"not a number: {row['num_gpu']!r}", stats, skip_bad_rows)
            continue
        if num_gpu == 0:
            stats.skipped["no GPU"] += 1
            continue
        if not row["scheduled_time"]:
            stats.skipped["never scheduled"] += 1
            continue
        try:
            milli = _num(row["gpu_milli"])
            created, deleted, scheduled = _num(row["creation_time"]), _num(row["deletion_time"]), _num(row["scheduled_time"])
        except ValueError as exc:
            _bad(path, line, "times/gpu_milli", str(exc), stats, skip_bad_rows)
            continue
        if num_gpu < 0 or milli <= 0 or deleted < scheduled:
            _bad(path, line, "num_gpu/gpu_milli/deletion_time", "negative or inconsistent values", stats, skip_bad_rows)
            continue
        cls = {"LS": "api-serving", "BE": "training"}.get(row["qos"], "inference")
        gpus = max(1, math.ceil(num_gpu * milli / 1000.0))
        jobs.append(TraceJob(row["name"], created, gpus, max(deleted - scheduled, 1.0), cls, gpu_type))
    jobs.sort(key=lambda j: j.arrival)
    stats.jobs = len(jobs)
    return jobs


def read_azure_llm(
    path: Path,
    *,
    skip_bad_rows: bool = False,
    window_seconds: float = 300.0,
    requests_per_replica: float = 2.0,
    gpus_per_replica: int = 8,
    gpu_type: str = "H100",
    stats: ReadStats | None = None,
) -> list[TraceJob]:
    """Requests -> api-serving replica demand: per window, ceil(rps / per-replica rps) replicas."""
    stats = stats if stats is not None else ReadStats()
    times: list[float] = []
    for line, row in _Rows(path, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]):
        stats.rows += 1
        try:
            times.append(datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp())
        except ValueError:
            _bad(path, line, "TIMESTAMP", f"not a timestamp: {row['TIMESTAMP']!r}", stats, skip_bad_rows)
    if not times:
        return []
    start = min(times)
    per_window = Counter(int((t - start) // window_seconds) for t in times)
    jobs: list[TraceJob] = []
    for w in range(max(per_window) + 1):
        rps = per_window.get(w, 0) / window_seconds
        for r in range(math.ceil(rps / requests_per_replica)):
            jobs.append(TraceJob(f"api-w{w}-r{r}", w * window_seconds, gpus_per_replica, window_seconds, "api-serving", gpu_type))
    stats.jobs = len(jobs)
    return jobs


def parse_columns(spec: str | None) -> dict[str, str]:
    """``arrival=submit_time,gpus=num_gpu,duration=duration[,class=...,gpu_type=...,name=...]``."""
    mapping = {"arrival": "arrival", "gpus": "gpus", "duration": "duration"}
    if spec:
        for part in spec.split(","):
            key, sep, col = part.partition("=")
            if not sep or key.strip() not in ("arrival", "gpus", "duration", "class", "gpu_type", "name"):
                raise TraceError(f"--columns: bad mapping {part!r} (keys: arrival, gpus, duration, class, gpu_type, name)")
            mapping[key.strip()] = col.strip()
    return mapping


def read_csv(path: Path, columns: dict[str, str], *, skip_bad_rows: bool = False, stats: ReadStats | None = None) -> list[TraceJob]:
    stats = stats if stats is not None else ReadStats()
    required = [columns["arrival"], columns["gpus"], columns["duration"]] + [columns[k] for k in ("class", "gpu_type", "name") if k in columns]
    jobs: list[TraceJob] = []
    for line, row in _Rows(path, required):
        stats.rows += 1
        try:
            arrival = _num(row[columns["arrival"]])
        except ValueError as exc:
            _bad(path, line, columns["arrival"], str(exc), stats, skip_bad_rows)
            continue
        try:
            gpus_f = _num(row[columns["gpus"]])
            if gpus_f < 1 or gpus_f != int(gpus_f) or gpus_f > 4096:
                raise ValueError(f"must be a whole number 1..4096, got {row[columns['gpus']]!r}")
        except ValueError as exc:
            _bad(path, line, columns["gpus"], str(exc), stats, skip_bad_rows)
            continue
        try:
            duration = _num(row[columns["duration"]])
            if duration <= 0:
                raise ValueError(f"must be > 0, got {row[columns['duration']]!r}")
        except ValueError as exc:
            _bad(path, line, columns["duration"], str(exc), stats, skip_bad_rows)
            continue
        cls = row[columns["class"]].strip() if "class" in columns else "training"
        if cls not in ("training", "inference", "api-serving"):
            _bad(path, line, columns.get("class", "class"), f"unknown class {cls!r}", stats, skip_bad_rows)
            continue
        name = row[columns["name"]].strip() if "name" in columns else f"row-{line}"
        gpu_type = row[columns["gpu_type"]].strip() if "gpu_type" in columns else "H100"
        jobs.append(TraceJob(name, arrival, int(gpus_f), duration, cls, gpu_type))
    jobs.sort(key=lambda j: j.arrival)
    stats.jobs = len(jobs)
    return jobs


def read_trace(
    path: Path, fmt: str, *, columns: str | None = None, skip_bad_rows: bool = False, stats: ReadStats | None = None
) -> list[TraceJob]:
    if fmt == "alibaba-openb":
        return read_alibaba(path, skip_bad_rows=skip_bad_rows, stats=stats)
    if fmt == "azure-llm":
        return read_azure_llm(path, skip_bad_rows=skip_bad_rows, stats=stats)
    if fmt == "csv":
        return read_csv(path, parse_columns(columns), skip_bad_rows=skip_bad_rows, stats=stats)
    raise TraceError(f"unknown trace format {fmt!r} (expected one of {', '.join(FORMATS)})")


@dataclass(frozen=True)
class SpotTrace:
    """One zone's availability series (AWS spot, 'Can't Be Late' format)."""

    zone: str
    gap_seconds: float
    data: tuple[int, ...]

    @property
    def availability(self) -> float:
        return sum(1 for x in self.data if x > 0) / len(self.data) if self.data else 0.0

    @property
    def days(self) -> float:
        return len(self.data) * self.gap_seconds / 86400.0


def read_spot_dir(directory: Path) -> list[SpotTrace]:
    import json

    files = sorted(directory.glob("*.json"))
    if not files:
        raise TraceError(f"{directory}: no *.json spot-availability files")
    out = []
    for f in files:
        try:
            doc = json.loads(f.read_text())
            gap = float(doc["metadata"]["gap_seconds"])
            data = tuple(int(x) for x in doc["data"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TraceError(f"{f}: not a spot-availability file ({exc})") from None
        if gap <= 0 or any(x < 0 for x in data):
            raise TraceError(f"{f}: gap_seconds must be > 0 and counts >= 0")
        out.append(SpotTrace(f.stem.split("_")[0], gap, data))
    return out
