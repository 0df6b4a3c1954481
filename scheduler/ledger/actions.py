"""Operator actions on records the writer cannot authenticate: adopt them, or truncate them.

``rotate`` is the third action: signed by the old log key, it names the new one (a
verifier key); the checkpoint that first names it is the old key's last, and the
verifier follows the rotation from the key its trust file pins.

A crashed writer leaves records after its last checkpoint; each carries the writer's MAC,
so a reopened writer signs them. Records without a valid MAC (written by someone else,
or altered) are quarantined until an operator decides: ``adopt`` (they become evidence,
signed, and every later checkpoint says so) or ``truncate`` (they are removed). Either
decision is an action note signed by the log key (who, when, why, which records), stored
in the ``actions`` table and committed to by an ``mcsched-action <sha256>`` extension line
in every later checkpoint, so it can be neither hidden nor forged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.ledger import note

HEADER = "mcsched-ledger-action/v1"
KINDS = ("adopt", "truncate", "rotate")


class ActionFormatError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Action:
    origin: str
    kind: str  # adopt | truncate
    first: int
    last: int
    after: int  # the checkpoint size the records followed
    who: str
    when: str  # ISO 8601 UTC
    why: str
    note: bytes = b""
    key: str = ""  # rotate: the new log verifier key

    def text(self) -> bytes:
        why = " ".join(self.why.split())  # one line, no control characters
        key = f"key {self.key}\n" if self.kind == "rotate" else ""
        return (
            f"{HEADER}\norigin {self.origin}\naction {self.kind}\nrecords {self.first} {self.last}\n"
            f"after {self.after}\n{key}who {' '.join(self.who.split())}\nwhen {self.when}\nwhy {why}\n"
        ).encode()

    def signed(self, key: Ed25519PrivateKey) -> Action:
        text = self.text()
        return Action(self.origin, self.kind, self.first, self.last, self.after, self.who, self.when, self.why,
                      note.signed_note(text, note.sign(text, self.origin, key)), self.key)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.note).hexdigest()

    def describe(self) -> str:
        if self.kind == "rotate":
            return f"log key rotated at size {self.after} to {self.key.split('+')[1]} by {self.who} at {self.when} ({self.why})"
        verb = "adopted" if self.kind == "adopt" else "truncated"
        return f"records {self.first}..{self.last} {verb} by {self.who} at {self.when} ({self.why})"


def parse_action(signed: bytes) -> tuple[Action, bytes, list[note.Signature]]:
    """An action note: (action, its text, its signatures)."""
    try:
        text, sigs = note.split(signed)
    except note.NoteError as exc:
        raise ActionFormatError(str(exc)) from None
    lines = text.decode("utf-8").split("\n")
    keys: tuple[str, ...] = ("origin", "action", "records", "after", "who", "when", "why")
    if len(lines) == 10:
        keys = ("origin", "action", "records", "after", "key", "who", "when", "why")
    if len(lines) not in (9, 10) or lines[0] != HEADER or lines[-1] != "":
        raise ActionFormatError(f"not an {HEADER} note")
    fields: dict[str, str] = {}
    for key, line in zip(keys, lines[1:-1], strict=True):
        if not line.startswith(key + " "):
            raise ActionFormatError(f"action note has no {key} line")
        fields[key] = line[len(key) + 1 :]
    try:
        first, last = (int(x) for x in fields["records"].split(" "))
        after = int(fields["after"])
    except ValueError:
        raise ActionFormatError("action note has bad record numbers") from None
    rotate = fields["action"] == "rotate"
    if fields["action"] not in KINDS or rotate != ("key" in fields) or not ((rotate and first == last == 0 <= after) or 0 <= after < first <= last):
        raise ActionFormatError("action note names an unknown action or bad records")
    act = Action(fields["origin"], fields["action"], first, last, after, fields["who"], fields["when"], fields["why"], signed, fields.get("key", ""))
    if act.text() != text:
        raise ActionFormatError("action note is not in canonical form")
    return act, text, sigs
