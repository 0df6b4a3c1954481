"""Human and machine renderings of decisions (rich tables, JSON, NDJSON).

JSON is written by msgspec's encoder (C, public API): a 100k-job plan's output is one
``to_dict`` and one ``encode`` per decision. Non-finite floats come out as ``null`` (strict
JSON), unlike the standard library's ``NaN``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import msgspec

from scheduler.decision import Decision

if TYPE_CHECKING:  # rich is imported by the table only: JSON output does without it
    from rich.table import Table

_encode = msgspec.json.Encoder().encode


def decisions_json(decisions: Sequence[Decision], explain: bool = False) -> str:
    """A JSON array with one decision (``Decision.to_dict``) per line: greppable, and one ``json.loads`` away."""
    return b"".join(json_chunks(decisions, explain)).decode()


def decisions_ndjson(decisions: Sequence[Decision], explain: bool = False) -> str:
    """NDJSON (JSON Lines): one decision object per line, nothing around them (empty for no decisions)."""
    return b"".join(ndjson_chunks(decisions, explain)).decode()


# The chunks go to the binary stream as they come (``cli.app.print_decisions``): a 100k-job
# plan prints 60 MB, which joined, decoded and encoded again for the text stream made three
# more copies (190 MB of the peak, and with the memo in ``explain.decisions`` 11% of the CPU).
def json_chunks(decisions: Sequence[Decision], explain: bool = False) -> Iterator[bytes]:
    """``decisions_json`` as UTF-8 bytes, one decision at a time."""
    if not decisions:
        yield b"[]"
        return
    sep = b"[\n  "
    for d in decisions:
        yield sep + _encode(d.to_dict(explain))
        sep = b",\n  "
    yield b"\n]"


def ndjson_chunks(decisions: Sequence[Decision], explain: bool = False) -> Iterator[bytes]:
    """``decisions_ndjson`` as UTF-8 bytes, one decision at a time."""
    for d in decisions:
        yield _encode(d.to_dict(explain)) + b"\n"


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
            (f"{d.reason}: {d.detail}" if d.reason else "") + (f"; now: {d.waiting}" if d.waiting else ""),
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
