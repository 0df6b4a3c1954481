"""Workload trace readers: Alibaba GPU v2023 (openb), Azure LLM inference, and generic CSV.

A trace never maps onto our job model without choices (which class a pod is, which GPU it
asks for, how a fraction of a GPU becomes a gang), and those choices move the results. So
every reader returns its jobs *and* the mapping rules it applied with their effect on the
trace (``Trace.rules``); the report prints them, and ``--class-map`` / ``--gpu-map`` change
them. Bad rows stop the read at the first one (file, line, column and why) unless
``skip_bad_rows`` is set, in which case they are counted in ``ReadStats`` and skipped.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Generator, Mapping
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from scheduler.errors import TraceError

FORMATS = ("alibaba-openb", "azure-llm", "csv", "jsonl")
CLASSES = ("training", "inference", "api-serving")
ANY_GPU = "any"  # the key --gpu-map uses for a trace row that names no GPU model
FALLBACK = "*"  # the key of a map entry that applies to every value not named
MAX_EXAMPLES = 5  # skipped rows whose reasons the report quotes


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace, times in seconds from the trace's start.

    ``priority`` is the trace row's own (``None``: the class default applies). A
    ``fixed_end`` job is demand for a time window (a serving replica): starting late does
    not move its end, and what it missed is unserved.
    """

    name: str
    arrival: float
    gpus: int
    duration: float
    cls: str
    gpu_type: str = "H100"
    priority: int | None = None
    fixed_end: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """A mapping rule a reader applied, and what it did to this trace."""

    rule: str
    effect: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "effect": self.effect}


@dataclass
class ReadStats:
    rows: int = 0
    jobs: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rules: list[Rule] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # the first skipped rows, each ``file:line: column: why``

    def skip(self, reason: str, example: str) -> None:
        """Count a skipped row under ``reason``; the first few keep their line for the report."""
        self.skipped[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def to_dict(self) -> dict[str, object]:
        return {"rows": self.rows, "jobs": self.jobs, "skipped": dict(self.skipped), "firstSkipped": list(self.examples),
                "mapping": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True)
class ReplicaModel:
    """How API requests become serving replicas (the azure-llm reader).

    A replica of ``gpusPerReplica`` GPUs prefills ``prefillTokensPerSecond`` context tokens
    and decodes ``decodeTokensPerSecond`` generated tokens per second (batched, whole
    replica). Each window needs enough replicas to do its requests' work at
    ``targetUtilisation``; replicas scale up at once and down at window ends, never below
    ``minReplicas`` (a public API does not scale to zero).
    """

    prefillTokensPerSecond: float = 12_000.0
    decodeTokensPerSecond: float = 2_500.0
    gpusPerReplica: int = 8
    gpuType: str = "H100"
    windowSeconds: float = 300.0
    targetUtilisation: float = 0.6
    minReplicas: int = 1

    @classmethod
    def parse(cls, spec: str | None) -> ReplicaModel:
        """``--replica prefillTokensPerSecond=12000,decodeTokensPerSecond=2500,gpusPerReplica=8,...``."""
        if not spec:
            return cls()
        known = {f: type(getattr(cls(), f)) for f in cls.__dataclass_fields__}
        values: dict[str, object] = {}
        for part in spec.split(","):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise TraceError(f"--replica: bad setting {part!r} (keys: {', '.join(known)})")
            kind = known[key]
            try:
                values[key] = raw.strip() if kind is str else kind(float(raw))
            except ValueError:
                raise TraceError(f"--replica: {key}: not a number: {raw.strip()!r}") from None
        model = replace(cls(), **values)  # type: ignore[arg-type]
        for name in ("prefillTokensPerSecond", "decodeTokensPerSecond", "windowSeconds"):
            if not getattr(model, name) > 0:
                raise TraceError(f"--replica: {name} must be > 0")
        if not 0 < model.targetUtilisation <= 1:
            raise TraceError("--replica: targetUtilisation must be in (0, 1]")
        if model.gpusPerReplica < 1 or model.minReplicas < 0:
            raise TraceError("--replica: gpusPerReplica must be >= 1 and minReplicas >= 0")
        return model

    def describe(self) -> str:
        return (
            f"prefill {self.prefillTokensPerSecond:,.0f} tok/s, decode {self.decodeTokensPerSecond:,.0f} tok/s per "
            f"{self.gpusPerReplica}x {self.gpuType} replica, {self.windowSeconds:g} s windows at "
            f"{self.targetUtilisation:.0%} target utilisation, at least {self.minReplicas} replica(s)"
        )


@dataclass(frozen=True)
class Trace:
    """What a reader produced: the jobs (sorted by arrival), its statistics and mapping rules."""

    jobs: list[TraceJob]
    stats: ReadStats
    load_rule: str = ""

    @property
    def gpu_types(self) -> set[str]:
        return {j.gpu_type for j in self.jobs}


class _Rows:
    """CSV rows with their line numbers and required-column checks.

    The file is decoded as a whole (one C call: a million-row trace's per-line decoding and
    ``DictReader`` were a fifth of its loading time); only if that fails is it decoded line
    by line, so an invalid UTF-8 byte, header included, is one error naming the file and its
    line, never a traceback.
    """

    def __init__(self, path: Path, required: list[str]) -> None:
        self.path = path
        self._line = 0
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TraceError(f"{path}: cannot read ({exc.strerror})") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            self._undecodable(data)
            raise  # not reached: ``_undecodable`` names the line
        self.reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(self.reader, [])
        except csv.Error as exc:
            raise TraceError(f"{path}:{self.reader.line_num}: unreadable header ({exc})") from None
        self._line = self.reader.line_num
        self.header = list(header)
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)} (header has {', '.join(header) or 'nothing'})")

    def _undecodable(self, data: bytes) -> None:
        """The first line that is not UTF-8, as one error (the whole file did not decode)."""
        for line, raw in enumerate(data.splitlines(keepends=True), 1):
            try:
                raw.decode("utf-8-sig" if line == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise TraceError(f"{self.path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None

    def close(self) -> None:
        """Nothing stays open: the file was read whole."""

    def __iter__(self) -> Generator[tuple[int, dict[str, str]], None, None]:
        reader, header, width = self.reader, self.header, len(self.header)
        try:
            for values in reader:
                if values:  # a blank line is no row (as DictReader)
                    if len(values) < width:  # a short row's missing fields are empty: each reader names the one it needs
                        values += [""] * (width - len(values))
                    yield reader.line_num, dict(zip(header, values, strict=False))
        except csv.Error as exc:
            raise TraceError(f"{self.path}:{reader.line_num}: unreadable row ({exc})") from None


def _bad(path: Path, line: int, column: str, why: str, stats: ReadStats, skip: bool) -> None:
    if not skip:
        raise TraceError(f"{path}:{line}: {column}: {why} (use --skip-bad-rows to count and skip)")
    stats.skip(f"bad {column}", f"{path.name}:{line}: {column}: {why}")


class _Names:
    """Job names seen so far with their line: a second job of the same name would corrupt the replay."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, int] = {}

    def add(self, name: str, line: int) -> None:
        first = self.lines.setdefault(name, line)
        if first != line:
            raise TraceError(f"{self.path}: duplicate job name {name!r} on lines {first} and {line} (job names must be unique)")


def _num(value: object) -> float:
    """A finite number from a CSV cell or a JSON value (``ValueError`` saying why not)."""
    if value.__class__ is str:  # the common case first, without the checks below (every cell of a trace)
        try:
            out = float(value)
        except ValueError:
            pass  # worded below
        else:
            if out - out == 0.0:  # finite (inf - inf and nan - nan are nan)
                return out
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise ValueError("empty")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"not a number: {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"not finite: {value!r}")
    return out


def parse_map(spec: str | None, flag: str, *, values: tuple[str, ...] | None = None) -> dict[str, str]:
    """``KEY=VALUE,...`` (``*`` as a key applies to every value not named)."""
    out: dict[str, str] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise TraceError(f"{flag}: bad mapping {part!r} (expected KEY=VALUE)")
        if values is not None and value not in values:
            raise TraceError(f"{flag}: {key}={value}: unknown value {value!r} (expected one of {', '.join(values)})")
        out[key] = value
    return out


def _lookup(mapping: dict[str, str], key: str) -> str | None:
    return mapping.get(key, mapping.get(FALLBACK))


def _check_used(flag: str, mapping: dict[str, str] | None, seen: set[str], what: str, path: Path) -> None:
    """A map key no row has is a typo (``Ls`` for ``LS``) that would silently change nothing: refuse it."""
    for key, value in (mapping or {}).items():
        if key != FALLBACK and key not in seen:
            has = ", ".join(sorted(seen)) or "none"
            raise TraceError(f"{flag}: {key}={value}: no row of {path.name} has {what} {key!r} (it has {has})")


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "0%"


def _class_rules(label: str, per_key: dict[tuple[str, str], list[float]], total_gpu_h: float) -> list[Rule]:
    """One rule per (trace value -> class), with jobs and share of replayed GPU-hours."""
    return [
        Rule(f"{label} {key or '(empty)'} -> {cls}", f"{int(v[0]):,} jobs, {_share(v[1], total_gpu_h)} of replayed GPU-hours")
        for (key, cls), v in sorted(per_key.items(), key=lambda kv: -kv[1][1])
    ]


DEFAULT_QOS_MAP = {"LS": "api-serving", "Burstable": "inference", "Guaranteed": "inference", "BE": "training"}


def read_alibaba(
    path: Path,
    *,
    skip_bad_rows: bool = False,
    class_map: dict[str, str] | None = None,
    gpu_map: dict[str, str] | None = None,
    stats: ReadStats | None = None,
) -> list[TraceJob]:
    """openb pods: arrival = creation_time; gang = ceil(num_gpu x gpu_milli/1000) whole GPUs.

    CPU-only pods and pods that were never scheduled are skipped (counted). ``class_map``
    maps ``qos`` to a class (default LS -> api-serving, Burstable/Guaranteed -> inference,
    BE -> training, as the traces README suggests); ``gpu_map`` maps ``gpu_spec`` (empty =
    ``any``) to a catalog GPU type (default: everything H100).
    """
    stats = stats if stats is not None else ReadStats()
    qos_map = {**DEFAULT_QOS_MAP, **(class_map or {})}
    types = {ANY_GPU: "H100", FALLBACK: "H100", **(gpu_map or {})}
    cols = ["name", "num_gpu", "gpu_milli", "qos", "creation_time", "deletion_time", "scheduled_time"]
    jobs: list[TraceJob] = []
    per_class: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    per_gpu: Counter[tuple[str, str]] = Counter()
    exact_gpu_h = rounded_gpu_h = 0.0
    fractional = 0
    has_spec = False
    seen_qos: set[str] = set()
    seen_spec: set[str] = set()
    names = _Names(path)
    with closing(_Rows(path, cols)) as rows:
        for line, row in rows:
            stats.rows += 1
            try:
                num_gpu = int(_num(row["num_gpu"]))
            except ValueError:
                _bad(path, line, "num_gpu", f"not a number: {row['num_gpu']!r}" if row["num_gpu"] else "empty", stats, skip_bad_rows)
                continue
            if num_gpu == 0:
                stats.skip("no GPU", f"{path.name}:{line}: num_gpu: 0 (a CPU-only pod)")
                continue
            if not row["scheduled_time"]:
                stats.skip("never scheduled", f"{path.name}:{line}: scheduled_time: empty (the pod never started)")
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
            qos = row["qos"]
            seen_qos.add(qos)
            cls = _lookup(qos_map, qos)
            if cls is None:
                _bad(path, line, "qos", f"{qos!r} has no class (add it to --class-map)", stats, skip_bad_rows)
                continue
            spec = (row.get("gpu_spec") or "").strip()
            has_spec = has_spec or bool(spec)
            seen_spec.add(spec or ANY_GPU)
            gpu_type = _lookup(types, spec or ANY_GPU)
            if gpu_type is None:  # pragma: no cover - FALLBACK is always set
                continue
            exact = num_gpu * milli / 1000.0
            gpus = max(1, math.ceil(exact))
            fractional += gpus != exact
            duration = max(deleted - scheduled, 1.0)
            exact_gpu_h += exact * duration / 3600
            rounded_gpu_h += gpus * duration / 3600
            per_class[(qos, cls)][0] += 1
            per_class[(qos, cls)][1] += gpus * duration / 3600
            per_gpu[(spec or ANY_GPU, gpu_type)] += 1
            names.add(row["name"], line)
            jobs.append(TraceJob(row["name"], created, gpus, duration, cls, gpu_type))
    _check_used("--class-map", class_map, seen_qos, "qos", path)
    _check_used("--gpu-map", gpu_map, seen_spec, "gpu_spec", path)
    jobs.sort(key=lambda j: j.arrival)
    stats.jobs = len(jobs)
    stats.rules += _class_rules("qos", per_class, rounded_gpu_h)
    for (spec, gpu_type), n in sorted(per_gpu.items()):
        note = " (the trace names no GPU model)" if spec == ANY_GPU and not has_spec else ""
        stats.rules.append(Rule(f"gpu_spec {spec} -> {gpu_type}{note}", f"{n:,} jobs"))
    if jobs:
        stats.rules.append(
            Rule(
                "fractional GPUs rounded up to whole GPUs (a gang holds whole GPUs)",
                f"{fractional:,} of {len(jobs):,} jobs; GPU-hours {exact_gpu_h:,.0f} -> {rounded_gpu_h:,.0f} "
                f"({(rounded_gpu_h / exact_gpu_h - 1) if exact_gpu_h else 0:+.1%})",
            )
        )
        stats.rules.append(Rule("duration = deletion_time - scheduled_time (pods still running at trace end run to their recorded deletion)", f"{len(jobs):,} jobs"))
    return jobs


@dataclass(frozen=True)
class RequestFields:
    """Which columns of a request trace hold the timestamp (and its unit) and the input and output tokens."""

    arrival: str = "TIMESTAMP"
    unit: str = "iso"
    input: str = "ContextTokens"
    output: str = "GeneratedTokens"

    @classmethod
    def parse(cls, spec: str | None) -> RequestFields:
        """``--columns arrival=ts[:iso|s|ms|epoch-s|epoch-ms],input=prompt_tokens,output=completion_tokens``."""
        out = cls()
        for part in (spec or "").split(","):
            if not part.strip():
                continue
            key, sep, col = part.partition("=")
            key, col = key.strip(), col.strip()
            if not sep or key not in ("arrival", "input", "output") or not col:
                raise TraceError(f"--columns: bad mapping {part!r} for a request trace (keys: arrival, input, output)")
            if key == "arrival" and ":" in col:
                col, unit = col.rsplit(":", 1)
                if unit not in ARRIVAL_UNITS:
                    raise TraceError(f"--columns: {part.strip()}: unknown arrival unit {unit!r} (expected one of {', '.join(ARRIVAL_UNITS)})")
                out = replace(out, unit=unit)
            out = replace(out, **{key: col})
        return out

    def describe(self) -> str:
        return f"arrival={self.arrival}:{self.unit}, input={self.input}, output={self.output}"


def _llm_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise TraceError(f"{path}: no *.csv request files in this directory")
        return files
    return [path]


def read_azure_llm(
    path: Path,
    *,
    skip_bad_rows: bool = False,
    model: ReplicaModel | None = None,
    load: float = 1.0,
    stats: ReadStats | None = None,
    fields: RequestFields | None = None,
) -> list[TraceJob]:
    """Requests (a file, or a directory of them) -> api-serving replicas that follow demand.

    ``fields`` maps any request trace's columns (default: the Azure trace's TIMESTAMP,
    ContextTokens, GeneratedTokens), so other request-level traces replay the same way.

    Each request costs ``ContextTokens / prefill + GeneratedTokens / decode`` replica-seconds
    (x ``load``, the request-volume multiplier); a window needs ``ceil(work / (window x
    targetUtilisation))`` replicas. A replica is one job from the window it is added to the
    window it is removed at (last added, first removed) with a fixed end: a replica that
    starts late still ends when demand says so.
    """
    stats = stats if stats is not None else ReadStats()
    model = model or ReplicaModel()
    fm = fields or RequestFields()
    reqs: list[tuple[float, float]] = []  # (timestamp, replica-seconds)
    tokens = [0, 0]
    files = _llm_files(path)
    for f in files:
        with closing(_Rows(f, [fm.arrival, fm.input, fm.output])) as rows:
            for line, row in rows:
                stats.rows += 1
                raw = row[fm.arrival]
                try:
                    ts = datetime.fromisoformat(raw[:26]).timestamp() if fm.unit == "iso" else _num(raw) * ARRIVAL_UNITS[fm.unit]
                except ValueError:
                    _bad(f, line, fm.arrival, f"not a timestamp ({fm.unit}): {raw!r}", stats, skip_bad_rows)
                    continue
                try:
                    ctx, gen = _num(row[fm.input]), _num(row[fm.output])
                    if ctx < 0 or gen < 0:
                        raise ValueError("negative token count")
                except ValueError as exc:
                    _bad(f, line, f"{fm.input}/{fm.output}", str(exc), stats, skip_bad_rows)
                    continue
                tokens[0] += int(ctx)
                tokens[1] += int(gen)
                reqs.append((ts, ctx / model.prefillTokensPerSecond + gen / model.decodeTokensPerSecond))
    if not reqs:
        return []
    start = min(t for t, _ in reqs)
    end = max(t for t, _ in reqs)
    window = model.windowSeconds
    windows = int((end - start) // window) + 1
    work = [0.0] * windows
    for t, w in reqs:
        work[int((t - start) // window)] += w * load
    need = [max(model.minReplicas, math.ceil(w / (window * model.targetUtilisation) - 1e-9)) for w in work]
    jobs: list[TraceJob] = []
    active: list[tuple[int, float]] = []  # (replica id, since)
    made = 0
    horizon = windows * window
    for w, n in enumerate([*need, 0]):
        now = min(w * window, horizon)
        while len(active) > n:
            rid, since = active.pop()
            jobs.append(TraceJob(f"api-replica-{rid}", since, model.gpusPerReplica, now - since, "api-serving", model.gpuType, None, True))
        while len(active) < n:
            made += 1
            active.append((made, now))
    jobs.sort(key=lambda j: (j.arrival, j.name))
    stats.jobs = len(jobs)
    replica_h = sum(j.duration for j in jobs) / 3600
    stats.rules += [
        Rule(
            f"{len(reqs):,} requests from {len(files)} file(s) over {horizon / 60:.0f} min -> api-serving replicas ({model.describe()})",
            f"{tokens[0]:,} context + {tokens[1]:,} generated tokens; peak {max(need)} replicas, mean {replica_h * 3600 / horizon:.1f}; "
            f"{len(jobs):,} replica jobs, {replica_h * model.gpusPerReplica:,.0f} GPU-hours",
        ),
        Rule("a replica is demand for a time window (fixed end): starting late shortens it, the rest is unserved", f"{len(jobs):,} jobs"),
        Rule(f"request fields: {fm.describe()}", f"{len(reqs):,} requests"),
    ]
    return jobs


FIELDS = ("arrival", "gpus", "duration", "class", "gpu_type", "name", "priority")
REQUIRED = ("arrival", "gpus", "duration")
#: column names a field is picked up from when ``--columns`` does not name one (first present wins)
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "arrival": ("arrival", "submit_time", "submitted", "submit", "creation_time", "timestamp"),
    "gpus": ("gpus", "num_gpu", "num_gpus", "gpu_count", "ngpus"),
    "duration": ("duration", "runtime", "run_time", "duration_seconds"),
    "class": ("class", "job_class", "qos", "job_type"),
    "gpu_type": ("gpu_type", "gpu_spec", "gpu_model"),
    "name": ("name", "job_name", "job_id", "id"),
    "priority": ("priority", "prio"),
}
ARRIVAL_UNITS = {"s": 1.0, "ms": 0.001, "epoch-s": 1.0, "epoch-ms": 0.001, "iso": 1.0}
DURATION_UNITS = {"s": 1.0, "ms": 0.001, "min": 60.0, "h": 3600.0}
#: units measured from the earliest row (absolute times: epochs, datetimes)
FROM_FIRST_ROW = frozenset({"epoch-s", "epoch-ms", "iso"})
#: labels of a class column that map without ``--class-map``: the classes, and openb's qos values
DEFAULT_CLASS_LABELS = {**{c: c for c in CLASSES}, "LS": "api-serving", "Burstable": "inference", "Guaranteed": "inference", "BE": "training"}


@dataclass
class FieldMap:
    """Which column (CSV) or key (JSON Lines) holds each field, and the time units.

    ``given`` are the fields ``--columns`` named; the others were picked up by their
    common names (``COMMON_NAMES``) from the header. ``describe`` is what the report shows.
    """

    columns: dict[str, str] = field(default_factory=dict)
    given: set[str] = field(default_factory=set)
    arrival_unit: str = "s"
    duration_unit: str = "s"

    def resolve(self, header: list[str], path: Path) -> FieldMap:
        """Fill the fields ``--columns`` left out from the header's common names; refuse a missing required one."""
        out = FieldMap(dict(self.columns), set(self.given), self.arrival_unit, self.duration_unit)
        present = set(header)
        for f in FIELDS:
            if f in out.columns:
                continue
            found = next((c for c in COMMON_NAMES[f] if c in present), None)
            if found is not None:
                out.columns[f] = found
        missing = [c for f, c in out.columns.items() if c not in present]
        absent = [f for f in REQUIRED if f not in out.columns]
        if missing or absent:
            want = missing + [f"{f} (none of {', '.join(COMMON_NAMES[f])}; name it with --columns {f}=COLUMN)" for f in absent]
            raise TraceError(f"{path}: missing column(s) {', '.join(want)} (header has {', '.join(header) or 'nothing'})")
        return out

    def describe(self) -> str:
        parts = []
        for f in FIELDS:
            if f in self.columns:
                unit = self.arrival_unit if f == "arrival" else self.duration_unit if f == "duration" else ""
                how = "" if f in self.given else " (by name)"
                parts.append(f"{f}={self.columns[f]}{':' + unit if unit else ''}{how}")
        return ", ".join(parts)


def parse_columns(spec: str | None) -> FieldMap:
    """``arrival=submit_time[:UNIT],gpus=num_gpu,duration=dur[:UNIT][,class=...,gpu_type=...,name=...,priority=...]``.

    Arrival units: s (default), ms (from the trace's start), epoch-s, epoch-ms, iso (absolute,
    measured from the earliest row). Duration units: s (default), ms, min, h. Fields left
    out are picked up from the header by their common names.
    """
    fm = FieldMap()
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, col = part.partition("=")
        key = key.strip()
        if not sep or key not in FIELDS or not col.strip():
            raise TraceError(f"--columns: bad mapping {part!r} (keys: {', '.join(FIELDS)})")
        col, colon, unit = col.strip().rpartition(":") if key in ("arrival", "duration") and ":" in col else (col.strip(), "", "")
        if colon:
            units = ARRIVAL_UNITS if key == "arrival" else DURATION_UNITS
            if unit not in units:
                raise TraceError(f"--columns: {part.strip()}: unknown {key} unit {unit!r} (expected one of {', '.join(units)})")
            if key == "arrival":
                fm.arrival_unit = unit
            else:
                fm.duration_unit = unit
        fm.columns[key] = col.strip()
        fm.given.add(key)
    return fm


Rows = Generator[tuple[int, Mapping[str, object]], None, None]


def _jsonl_rows(path: Path) -> tuple[list[str], Rows]:
    """JSON Lines objects with their line numbers; the 'header' is the keys of the first object."""
    import msgspec

    from scheduler.io.jsonlines import duplicate_key

    try:
        fh = path.open("rb")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror})") from None
    decoder = msgspec.json.Decoder(dict[str, object])

    def rows() -> Rows:
        with fh:
            for line, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    row = decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    raise TraceError(f"{path}:{line}: not a JSON object ({exc})") from None
                key = duplicate_key(raw, row)
                if key is not None:  # a JSON parser keeps the last silently: a generator's bug would change a job without a word
                    raise TraceError(f"{path}:{line}: duplicate key {key!r}")
                yield line, row

    it = rows()
    first = next(it, None)
    if first is None:
        return [], it

    def again(first: tuple[int, Mapping[str, object]]) -> Rows:
        yield first
        yield from it  # closing this closes ``it`` and the file

    return list(first[1]), again(first)


def _text(value: object) -> str:
    return "" if value is None else value.strip() if isinstance(value, str) else str(value)


def _arrival(value: object, unit: str) -> float:
    if unit == "iso":
        text = _text(value)
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValueError(f"not an ISO datetime: {text!r}") from None
    return _num(value) * ARRIVAL_UNITS[unit]


def read_table(
    path: Path,
    fields: FieldMap,
    *,
    fmt: str = "csv",
    skip_bad_rows: bool = False,
    class_map: dict[str, str] | None = None,
    gpu_map: dict[str, str] | None = None,
    stats: ReadStats | None = None,
) -> list[TraceJob]:
    """A generic job trace (CSV, or JSON Lines with ``fmt="jsonl"``) through a field mapping.

    ``class`` values are job classes or openb's qos labels unless ``class_map`` maps the
    trace's own labels; ``priority`` (-1000..1000) overrides the class default for that row.
    """
    stats = stats if stats is not None else ReadStats()
    source: Rows
    if fmt == "jsonl":
        header, source = _jsonl_rows(path)
    else:
        table = _Rows(path, [])
        header, source = table.header, table.__iter__()
    try:
        fm = fields.resolve(header, path)
    except TraceError:
        close = getattr(source, "close", None)
        if close is not None:
            close()
        if fmt != "jsonl":
            table.close()
        raise
    columns = fm.columns
    classes = DEFAULT_CLASS_LABELS | (class_map or {})
    types = gpu_map or {}
    jobs: list[TraceJob] = []
    per_class: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    per_gpu: Counter[tuple[str, str]] = Counter()
    prioritised = 0
    total_gpu_h = 0.0
    seen_labels: set[str] = set()
    seen_types: set[str] = set()
    names = _Names(path)
    a_col, g_col, d_col = columns["arrival"], columns["gpus"], columns["duration"]
    a_unit, d_scale = fm.arrival_unit, DURATION_UNITS[fm.duration_unit]
    c_col, p_col, n_col, t_col = columns.get("class"), columns.get("priority"), columns.get("name"), columns.get("gpu_type")
    with closing(source) as rows:
        for line, row in rows:
            stats.rows += 1
            try:
                arrival = _arrival(row.get(a_col), a_unit)
                if arrival < 0:
                    raise ValueError(f"must be >= 0 seconds, got {row.get(a_col)!r}")
            except ValueError as exc:
                _bad(path, line, a_col, str(exc), stats, skip_bad_rows)
                continue
            try:
                gpus_f = _num(row.get(g_col))
                if gpus_f < 1 or gpus_f != int(gpus_f) or gpus_f > 4096:
                    raise ValueError(f"must be a whole number 1..4096, got {row.get(g_col)!r}")
            except ValueError as exc:
                _bad(path, line, g_col, str(exc), stats, skip_bad_rows)
                continue
            try:
                duration = _num(row.get(d_col)) * d_scale
                if duration <= 0:
                    raise ValueError(f"must be > 0 seconds, got {row.get(d_col)!r}")
            except ValueError as exc:
                _bad(path, line, d_col, str(exc), stats, skip_bad_rows)
                continue
            label = _text(row.get(c_col)) if c_col else "training"
            seen_labels.add(label)
            cls = _lookup(classes, label)
            if cls is None:
                hint = "add it to --class-map" if label else "empty"
                _bad(path, line, c_col or "class", f"unknown class {label!r} ({hint}; classes: {', '.join(CLASSES)})", stats, skip_bad_rows)
                continue
            priority: int | None = None
            if p_col and _text(row.get(p_col)):
                try:
                    p = _num(row.get(p_col))
                    if p != int(p) or not -1000 <= p <= 1000:
                        raise ValueError("out of range")
                except ValueError:
                    _bad(path, line, p_col, f"must be a whole number -1000..1000, got {row.get(p_col)!r}", stats, skip_bad_rows)
                    continue
                priority = int(p)
                prioritised += 1
            if n_col:
                name = _text(row.get(n_col))
                names.add(name, line)
            else:
                name = f"row-{line}"
            raw_type = _text(row.get(t_col)) if t_col else ""
            seen_types.add(raw_type or ANY_GPU)
            gpu_type = _lookup(types, raw_type or ANY_GPU) or raw_type or "H100"
            gpus = int(gpus_f)
            total_gpu_h += gpus * duration / 3600
            per_class[(label, cls)][0] += 1
            per_class[(label, cls)][1] += gpus * duration / 3600
            per_gpu[(raw_type or ANY_GPU, gpu_type)] += 1
            jobs.append(TraceJob(name, arrival, gpus, duration, cls, gpu_type, priority))
    _check_used("--class-map", class_map, seen_labels, c_col or "class", path)
    _check_used("--gpu-map", gpu_map, seen_types, t_col or "gpu_type", path)
    origin = ""
    if a_unit in FROM_FIRST_ROW and jobs:
        first = min(j.arrival for j in jobs)
        jobs = [replace(j, arrival=j.arrival - first) for j in jobs]
        origin = f", measured from the earliest row ({datetime.fromtimestamp(first, UTC).isoformat()})"
    jobs.sort(key=lambda j: j.arrival)
    stats.jobs = len(jobs)
    stats.rules.append(Rule(f"{'JSON Lines' if fmt == 'jsonl' else 'CSV'} fields: {fm.describe()}",
                            f"arrival in {a_unit}{origin}; duration in {fm.duration_unit}; {len(jobs):,} jobs"))
    stats.rules += _class_rules("class" if c_col else "(no class column)", per_class, total_gpu_h)
    for (raw, gpu_type), n in sorted(per_gpu.items()):
        stats.rules.append(Rule(f"gpu_type {raw} -> {gpu_type}", f"{n:,} jobs"))
    if p_col:
        stats.rules.append(Rule(f"priority column {p_col!r} overrides the class priority", f"{prioritised:,} jobs"))
    return jobs


def read_csv(path: Path, columns: FieldMap, **kw: object) -> list[TraceJob]:
    """``read_table`` on a CSV file (kept for callers of the first reader)."""
    return read_table(path, columns, fmt="csv", **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReadOptions:
    """Everything a reader may need; unused fields are ignored by the other formats."""

    columns: str | None = None
    skip_bad_rows: bool = False
    class_map: str | None = None
    gpu_map: str | None = None
    replica: str | None = None
    load: float = 1.0


def read_trace(path: Path, fmt: str, options: ReadOptions | None = None) -> Trace:
    """Read and map a trace, then apply the load factor the format supports."""
    o = options or ReadOptions()
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if not o.load > 0 or not math.isfinite(o.load):
        raise TraceError("--load: must be a number > 0")
    stats = ReadStats()
    class_map = parse_map(o.class_map, "--class-map", values=CLASSES)
    gpu_map = parse_map(o.gpu_map, "--gpu-map")
    if fmt == "azure-llm":
        if class_map or gpu_map:
            raise TraceError("--class-map/--gpu-map: azure-llm requests are api-serving replicas; set their GPU type with --replica gpuType=...")
        jobs = read_azure_llm(path, skip_bad_rows=o.skip_bad_rows, model=ReplicaModel.parse(o.replica), load=o.load, stats=stats,
                              fields=RequestFields.parse(o.columns))
        rule = f"load x{o.load:g}: request volume scaled (the hour keeps its shape)"
        return Trace(jobs, stats, rule)
    if o.replica:
        raise TraceError("--replica: only the azure-llm format has serving replicas")
    if fmt == "alibaba-openb":
        if o.columns:
            raise TraceError("--columns: only the csv and jsonl formats take a field mapping")
        jobs = read_alibaba(path, skip_bad_rows=o.skip_bad_rows, class_map=class_map, gpu_map=gpu_map, stats=stats)
    else:
        jobs = read_table(path, parse_columns(o.columns), fmt=fmt, skip_bad_rows=o.skip_bad_rows, class_map=class_map, gpu_map=gpu_map, stats=stats)
    if o.load != 1.0:
        jobs = [replace(j, arrival=j.arrival / o.load) for j in jobs]
    rule = f"load x{o.load:g}: arrivals compressed {o.load:g}x, durations unchanged" if o.load != 1.0 else "load x1: arrivals as recorded"
    return Trace(jobs, stats, rule)


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
    if not directory.is_dir():
        raise TraceError(f"{directory}: not a directory of spot-availability files")
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
        if gap <= 0 or not data or any(x < 0 for x in data):
            raise TraceError(f"{f}: gap_seconds must be > 0 and data non-empty counts >= 0")
        out.append(SpotTrace(f.stem.split("_")[0], gap, data))
    return out
