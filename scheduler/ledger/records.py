"""The one byte form of a ledger record, and its strict reader.

A record is canonical JSON (sorted keys, no spaces, ASCII, finite numbers) of ``seq``,
``kind`` and every field of the event (``at`` included). Those bytes are the Merkle leaf,
the only thing the ``records`` table stores next to its ``seq`` and the exact line that
``audit export`` prints, so an auditor hashes what they read. The reader checks every
field's type against the event schema (``scheduler/events.py``) before anything uses it:
a malformed record is a one-line verdict, never a crash.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from scheduler.events import EVENT_TYPES, Event, event_from_record

Check = Callable[[Any], bool]
_decoder = json.JSONDecoder(parse_constant=lambda name: _reject_constant(name))


class MalformedRecord(ValueError):
    """A record that does not decode to a well-typed event."""


def _reject_constant(name: str) -> Any:
    raise MalformedRecord(f"non-finite number {name}")


def encode(seq: int, event: Event) -> bytes:
    """The canonical record bytes (the Merkle leaf) of ``event`` at position ``seq``."""
    rec = event.to_record()
    rec["kind"] = event.kind
    rec["seq"] = seq
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- schema


def _is_num(v: Any) -> bool:
    t = type(v)
    return (t is float and math.isfinite(v)) or t is int


def _checker(tp: Any) -> Check:
    """A predicate for one annotated field type (the shapes events.py uses)."""
    origin = typing.get_origin(tp)
    if tp is str:
        return lambda v: type(v) is str
    if tp is int:
        return lambda v: type(v) is int
    if tp is bool:
        return lambda v: type(v) is bool
    if tp is float:
        return _is_num
    if tp is type(None):
        return lambda v: v is None
    if tp is Any:
        return lambda v: True
    if origin in (typing.Union, types.UnionType):
        parts = [_checker(a) for a in typing.get_args(tp)]
        return lambda v: any(p(v) for p in parts)
    if origin is dict:
        key_t, val_t = typing.get_args(tp)
        kc, vc = _checker(key_t), _checker(val_t)
        return lambda v: type(v) is dict and all(kc(k) and vc(x) for k, x in v.items())
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _checker(args[0])
            return lambda v: type(v) in (list, tuple) and all(item(x) for x in v)
        items = [_checker(a) for a in args]
        n = len(items)
        return lambda v: type(v) in (list, tuple) and len(v) == n and all(c(x) for c, x in zip(items, v, strict=True))
    raise TypeError(f"no record check for {tp!r}")  # pragma: no cover - a new field type in events.py


def _schemas() -> dict[str, tuple[frozenset[str], tuple[tuple[str, Check, str], ...]]]:
    out = {}
    for kind, cls in EVENT_TYPES.items():
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        checks = tuple((n, _checker(hints[n]), _describe(hints[n])) for n in names)
        out[kind] = (frozenset([*names, "kind", "seq"]), checks)
    return out


def _describe(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp).replace("typing.", ""))


SCHEMAS = _schemas()


def decode(leaf: bytes) -> dict[str, Any]:
    """Parse and type-check one record; raises MalformedRecord naming the field."""
    try:
        rec = _decoder.decode(leaf.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedRecord("record is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedRecord(f"record is not JSON ({exc.msg} at byte {exc.pos})") from None
    if type(rec) is not dict:
        raise MalformedRecord("record is not a JSON object")
    kind = rec.get("kind")
    schema = SCHEMAS.get(kind) if type(kind) is str else None
    if schema is None:
        raise MalformedRecord(f"unknown record kind {kind!r}")
    keys, checks = schema
    if rec.keys() != keys:
        missing = sorted(keys - rec.keys())
        extra = sorted(rec.keys() - keys)
        raise MalformedRecord(f"{kind} record " + (f"lacks {missing[0]!r}" if missing else f"has unknown field {extra[0]!r}"))
    if type(rec["seq"]) is not int:
        raise MalformedRecord("seq must be an integer")
    for name, check, what in checks:
        if not check(rec[name]):
            raise MalformedRecord(f"{kind} field {name!r} must be {what}, not {json.dumps(rec[name])[:40]}")
    return rec


def to_event(rec: dict[str, Any]) -> Event:
    """The event of a decoded record."""
    data = {k: v for k, v in rec.items() if k not in ("kind", "seq")}
    return event_from_record(rec["kind"], data)
