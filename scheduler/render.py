"""Human and machine renderings of decisions (rich tables, JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING

from scheduler.decision import Decision

if TYPE_CHECKING:  # rich is imported by the table only: JSON output does without it
    from rich.table import Table


def decisions_json(decisions: Sequence[Decision], explain: bool = False) -> str:
    """A JSON array with one decision per line: greppable, and written by json's C encoder
    (``indent=`` would switch to its pure-Python one, the slowest step of a 100k-job plan).

    Each line is exactly ``json.dumps(d.to_dict(explain), ensure_ascii=False)``: written
    directly by ``_decision_line`` without ``--explain``, else by one C encoder that serves
    every line (``JSONEncoder.encode`` builds a new one per call).
    """
    if not decisions:
        return "[]"
    encode = _line_encoder()
    if explain or Decision._fields != _LINE_FIELDS:
        return "[\n  " + ",\n  ".join([encode(d.to_dict(explain)) for d in decisions]) + "\n]"
    return "[\n  " + ",\n  ".join([_decision_line(d) or encode(d.to_dict()) for d in decisions]) + "\n]"


#: The fields ``_decision_line`` unpacks, in order (another Decision shape takes the encoder).
_LINE_FIELDS = (
    "job", "cls", "outcome", "gpu_type", "gpus", "holder", "rofr_answer", "rofr_reason", "cloud", "region",
    "price", "via", "reason", "detail", "attempt", "dropped", "version", "history", "planned", "waiting",
)  # fmt: skip


def _decision_line(d: Decision) -> str | None:
    """``json.dumps(d.to_dict(), ensure_ascii=False)`` written field by field, or None for a
    value it does not take on (then the encoder writes the line).

    The same text by the same functions: strings by json's C ``encode_basestring`` (which
    raises for a non-str), ints by ``int.__repr__`` (exact ints only: a bool is not one),
    finite floats by ``float.__repr__``, None as ``null``, in ``to_dict``'s key order. About
    three times faster than building the dict and walking it (a 10k-job plan's largest step
    after placing).
    """
    (
        job,
        cls,
        outcome,
        gpu_type,
        gpus,
        holder,
        answer,
        rofr_reason,
        cloud,
        region,
        price,
        via,
        reason,
        detail,
        attempt,
        _,
        version,
        _,
        _,
        waiting,
    ) = d
    if waiting is not None:  # a queued job's planned start: the encoder writes those
        return None
    if type(gpus) is not int or type(attempt) is not int or type(version) is not int:
        return None
    if price is None:
        per_gpu = per_hour = "null"
    elif type(price) is float and -_INF < price < _INF:
        total = round(price * gpus, 4)
        if not -_INF < total < _INF:
            return None
        per_gpu, per_hour = float.__repr__(price), float.__repr__(total)
    else:
        return None
    try:
        line = (
            f'{{"job": {encode_basestring(job)}, "class": {encode_basestring(cls)}, "outcome": {encode_basestring(outcome)}, '
            f'"cloud": {"null" if cloud is None else encode_basestring(cloud)}, '
            f'"region": {"null" if region is None else encode_basestring(region)}, "gpuType": {encode_basestring(gpu_type)}, '
            f'"gpus": {gpus}, "priceUsdPerHour": {per_hour}, "priceUsdPerGpuHour": {per_gpu}, '
            f'"via": {"null" if via is None else encode_basestring(via)}, '
            f'"rofr": {{"holder": {encode_basestring(holder)}, "answer": {encode_basestring(answer)}, '
            f'"reason": {encode_basestring(rofr_reason)}}}, "attempt": {attempt}, "version": {version}'
        )
        if reason is None:
            return line + "}"
        return f'{line}, "reason": {encode_basestring(reason)}, "detail": {"null" if detail is None else encode_basestring(detail)}}}'
    except TypeError:  # a non-str where the line expects one
        return None


_INF = float("inf")


def _line_encoder() -> Callable[[object], str]:
    """``json.dumps(x, ensure_ascii=False)`` for dicts, as one reusable encoder."""
    if c_make_encoder is None:  # a Python without the _json accelerator
        return json.JSONEncoder(ensure_ascii=False).encode
    # The arguments JSONEncoder.iterencode passes for ensure_ascii=False, check_circular=False
    # (decisions hold no cycles); the C encoder formats floats with float.__repr__ itself.
    chunks = c_make_encoder(None, _no_default, encode_basestring, None, ": ", ", ", False, False, True)
    return lambda obj: "".join(chunks(obj, 0))


def _no_default(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def decisions_table(decisions: Sequence[Decision], explain: bool = False, title: str | None = None) -> Table:
    from rich.table import Table

    table = Table(title=title, show_lines=explain)
    for col in ("job", "class", "outcome", "where", "GPUs", "$/h", "ROFR", "reason"):
        table.add_column(col, overflow="fold")
    if explain:
        table.add_column("not used (why)", overflow="fold")
        table.add_column("history", overflow="fold")
    for d in decisions:
        where = f"{d.cloud}/{d.region}" if d.cloud else "-"
        cost = f"{d.price * d.gpus:,.2f}" if d.price is not None else "-"
        rofr = d.rofr_answer + (f" ({d.rofr_reason})" if d.rofr_reason else "")
        style = {"placed": "green", "queued": "yellow", "failed": "red"}.get(d.outcome)
        row = [
            d.job,
            d.cls,
            f"[{style}]{d.outcome}[/]" if style else d.outcome,
            where,
            f"{d.gpus}x {d.gpu_type}",
            cost,
            rofr,
            (f"{d.reason}: {d.detail}" if d.reason else ""),
        ]
        if explain:
            row.append("\n".join(f"{c}: {why}" for c, why in d.dropped))
            start = d.history[0][0] if d.history else 0.0
            row.append("\n".join(_history_line(h, start) for h in d.history))
        table.add_row(*row)
    return table


def _history_line(entry: tuple[float, str, str, str, str], start: float) -> str:
    """One history step, timed from the job's first step: the live scheduler's clock is the
    epoch (``t=1796228857s`` says nothing), ``plan``'s starts at 0 (same numbers either way)."""
    at, what, cloud, region, detail = entry
    where = f" {cloud}/{region}" if cloud else ""
    return f"t={at - start:.0f}s {what}{where} ({detail})"
