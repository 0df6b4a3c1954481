"""C2SP signed notes (c2sp.org/signed-note): text, a blank line, one ``— name base64`` line per signature.

Only what the ledger needs: Ed25519 note signatures (type 0x01) for the log's own
checkpoints, timestamped Ed25519 cosignatures (type 0x04, c2sp.org/tlog-cosignature) for
witnesses, and verifier keys (``name+hash+base64(type || key)``) for trust files. The
signature arithmetic is ``cryptography``'s; this module only frames bytes, and it is strict
(one encoding per note) so that no byte of a stored note is insignificant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

EM_DASH = "\u2014"
SIG_PREFIX = (EM_DASH + " ").encode()
ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100  # signed-note: verifiers SHOULD bound them, MUST accept 16
MAX_NOTE = 1 << 20


class NoteError(ValueError):
    """A note, signature line or verifier key that is not in the one C2SP form."""


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(name: str, alg: int, public: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


@dataclass(frozen=True, slots=True)
class Verifier:
    """A named public key of one signature type (0x01 note signer, 0x04 cosigner)."""

    name: str
    alg: int
    public: bytes  # 32 raw Ed25519 bytes

    @property
    def kid(self) -> bytes:
        return key_hash(self.name, self.alg, self.public)

    def vkey(self) -> str:
        return f"{self.name}+{self.kid.hex()}+{base64.b64encode(bytes([self.alg]) + self.public).decode()}"

    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public)


def verifier(name: str, public: Ed25519PublicKey, alg: int = ALG_ED25519) -> Verifier:
    return Verifier(check_name(name), alg, raw_public(public))


def parse_vkey(text: str) -> Verifier:
    """A verifier key ``name+hexhash+base64(type || key)``; the hash must match."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or len(parts[1]) != 8:
        raise NoteError(f"verifier key {text!r} is not name+hash+key")
    name, hexhash, b64 = parts
    try:
        blob = base64.b64decode(b64, validate=True)
        want = bytes.fromhex(hexhash)
    except (binascii.Error, ValueError):
        raise NoteError(f"verifier key {text!r}: bad base64 or hash") from None
    if len(blob) != 33 or blob[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise NoteError(f"verifier key {text!r}: not an Ed25519 (0x01) or cosignature/v1 (0x04) key")
    v = Verifier(check_name(name), blob[0], blob[1:])
    if v.kid != want:
        raise NoteError(f"verifier key {text!r}: key hash {hexhash} does not match the key")
    return v


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    kid: bytes
    blob: bytes  # what follows the key ID: a signature, or timestamp || signature

    def line(self) -> bytes:
        return SIG_PREFIX + self.name.encode() + b" " + base64.b64encode(self.kid + self.blob) + b"\n"


_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")  # control characters other than newline: one scan in C, not a call per character


def split(note: bytes) -> tuple[bytes, list[Signature]]:
    """(text, signatures) of a signed note; the text ends at the last blank line."""
    if len(note) > MAX_NOTE:
        raise NoteError("note is too large")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not UTF-8") from None
    if _CONTROL.search(decoded):
        raise NoteError("note holds a control character")
    cut = note.rfind(b"\n\n")
    if cut < 0 or not note.endswith(b"\n"):
        raise NoteError("note has no signature block")
    text, block = note[: cut + 1], note[cut + 2 :]
    lines = block.split(b"\n")[:-1]
    if not lines or len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note must carry 1..{MAX_SIGNATURES} signatures")
    return text, [parse_signature_line(line) for line in lines]


def parse_signature_line(line: bytes) -> Signature:
    if not line.startswith(SIG_PREFIX):
        raise NoteError("signature line does not start with an em dash and a space")
    rest = line[len(SIG_PREFIX) :].split(b" ")
    if len(rest) != 2:
        raise NoteError("signature line is not '— name signature'")
    try:
        blob = base64.b64decode(rest[1], validate=True)
        name = check_name(rest[0].decode())
    except (binascii.Error, UnicodeDecodeError):
        raise NoteError("signature is not base64") from None
    if len(blob) < 5 or base64.b64encode(blob) != rest[1]:
        raise NoteError("signature is too short or not canonical base64")
    return Signature(name, blob[:4], blob[4:])


def sign(text: bytes, name: str, key: Ed25519PrivateKey, kid: bytes | None = None) -> Signature:
    """An Ed25519 note signature (type 0x01) over ``text``; ``kid``: the key ID, if the caller keeps it (deriving it costs more than signing)."""
    if kid is None:
        kid = key_hash(check_name(name), ALG_ED25519, raw_public(key.public_key()))
    return Signature(name, kid, key.sign(text))


def signed_note(text: bytes, *sigs: Signature) -> bytes:
    return text + b"\n" + b"".join(s.line() for s in sigs)


def matches(sig: Signature, v: Verifier) -> bool:
    """Whether ``sig`` claims to be by ``v`` (name and key ID both); others are ignored, per the spec."""
    return sig.name == v.name and sig.kid == v.kid


def valid(text: bytes, sig: Signature, v: Verifier) -> bool:
    """An Ed25519 note signature by ``v`` that verifies over ``text``."""
    if v.alg != ALG_ED25519 or not matches(sig, v) or len(sig.blob) != 64:
        return False
    try:
        v.key().verify(sig.blob, text)
    except InvalidSignature:
        return False
    return True


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def cosign(text: bytes, name: str, key: Ed25519PrivateKey, timestamp: int) -> Signature:
    """A timestamped cosignature/v1 (type 0x04) over a checkpoint's note text."""
    kid = key_hash(check_name(name), ALG_COSIGNATURE_V1, raw_public(key.public_key()))
    return Signature(name, kid, struct.pack(">Q", timestamp) + key.sign(cosigned_message(text, timestamp)))


def cosignature_time(text: bytes, sig: Signature, v: Verifier) -> int | None:
    """The timestamp of a valid cosignature by ``v`` over ``text``, else None."""
    if v.alg != ALG_COSIGNATURE_V1 or not matches(sig, v) or len(sig.blob) != 72:
        return None
    (timestamp,) = struct.unpack(">Q", sig.blob[:8])
    if timestamp >= 1 << 63:
        return None
    try:
        v.key().verify(sig.blob[8:], cosigned_message(text, timestamp))
    except InvalidSignature:
        return None
    return int(timestamp)
