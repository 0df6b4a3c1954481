"""The writer's keys and its checkpoints in the C2SP tlog-checkpoint format.

A checkpoint is a signed note (``note.py``) whose text is the log's origin, its size and
its RFC 9162 root in base64, then optional extension lines: this ledger writes one
``mcsched-action <sha256>`` line per operator action (adoption, truncation) so that every
later checkpoint commits to them. The signature is an Ed25519 note signature whose key
name is the origin, so any C2SP verifier (Go's ``sumdb/note``, ``aics-tlog``) checks it.

Two secrets live side by side, both 0600 and created on first use: the Ed25519 signing key
(PEM, ``ledger-signing.key``, public half beside it as ``.pub``) and the record MAC key
(32 random bytes, ``ledger-mac.key``). The MAC key never leaves the writer: a record
with a valid MAC was written by it, whatever happened to the file since.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scheduler.errors import LedgerError, LedgerInputError
from scheduler.ledger import note as c2sp
from scheduler.ledger.merkle import EMPTY_ROOT
from scheduler.paths import state_dir

KEY_NAME = "ledger-signing.key"
MAC_NAME = "ledger-mac.key"
ACTION_LINE = "mcsched-action "


def default_key_path(home: str | Path | None = None) -> Path:
    """``$MCSCHED_SIGNING_KEY`` (a mounted Kubernetes Secret) or ``ledger-signing.key`` in ``home`` / ``$MCSCHED_HOME``."""
    env = os.environ.get("MCSCHED_SIGNING_KEY")
    return Path(env) if env else Path(home or state_dir()) / KEY_NAME


def public_path_for(key_path: Path) -> Path:
    """The public key lives beside the private one: ``ledger-signing.key`` -> ``ledger-signing.pub``."""
    return key_path.with_suffix(".pub") if key_path.suffix == ".key" else key_path.with_name(key_path.name + ".pub")


def mac_path_for(key_path: Path) -> Path:
    """The record MAC key lives beside the signing key (same directory, same Secret)."""
    return key_path.with_name(MAC_NAME)


def default_public_key_path() -> Path:
    env = os.environ.get("MCSCHED_PUBLIC_KEY")
    return Path(env) if env else public_path_for(default_key_path())


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint for people (SHA-256 of the raw key, 16 hex digits)."""
    return hashlib.sha256(c2sp.raw_public(public)).hexdigest()[:16]


def _public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_private(path: Path, data: bytes, what: str) -> bool:
    """Create ``path`` 0600 with ``data``; False if it already exists (never overwritten)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise LedgerError(f"{path}: cannot create the {what} ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
    return True


def generate_key(key_path: Path) -> Ed25519PrivateKey:
    """Create a new key file (0600, never overwritten) and its public key beside it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if not write_private(key_path, pem, "ledger signing key"):
        return load_private_key(key_path)
    write_private(public_path_for(key_path), _public_pem(key.public_key()), "public key")
    return key


def _read(path: Path, what: str, limit: int = 1 << 16) -> bytes:
    try:
        if path.stat().st_size > limit:
            raise LedgerInputError(f"{path}: too large for a {what}")
        return path.read_bytes()
    except OSError as exc:
        raise LedgerInputError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def load_private_key(key_path: Path) -> Ed25519PrivateKey:
    data = _read(key_path, "ledger signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise LedgerInputError(f"{key_path}: not a PEM Ed25519 private key ({str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerInputError(f"{key_path}: not an Ed25519 private key ({type(key).__name__})")
    pub = public_path_for(key_path)
    if not pub.exists() and os.access(pub.parent, os.W_OK):
        write_private(pub, _public_pem(key.public_key()), "public key")
    return key


def load_or_create_key(key_path: Path) -> Ed25519PrivateKey:
    """The signing key at ``key_path``, created (0600) on first use."""
    return load_private_key(key_path) if key_path.exists() else generate_key(key_path)


def load_or_create_mac_key(path: Path) -> bytes:
    """The record MAC key (32 random bytes, hex, 0600), created on first use."""
    if not path.exists():
        write_private(path, secrets.token_hex(32).encode() + b"\n", "record MAC key")
    data = _read(path, "record MAC key", 256)
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise LedgerInputError(f"{path}: not a record MAC key (64 hex digits)") from None
    if len(key) != 32:
        raise LedgerInputError(f"{path}: not a record MAC key (64 hex digits, found {len(key) * 2})")
    return key


def record_mac(mac_key: bytes, origin: str, leaves: list[bytes]) -> bytes:
    """HMAC-SHA256 of one transaction's records under the writer's key, bound to the log.

    Each leaf holds its own ``seq`` and is canonical JSON (no raw newline), so the
    newline-joined leaves name exactly these records in this order.
    """
    return hmac.digest(mac_key, origin.encode() + b"\n" + b"\n".join(leaves), "sha256")


class RecordMac:
    """``record_mac`` for one key and origin, with the keyed state computed once (copying it is cheaper than keying)."""

    def __init__(self, mac_key: bytes, origin: str) -> None:
        self._base = hmac.new(mac_key, origin.encode() + b"\n", "sha256")

    def __call__(self, leaves: list[bytes]) -> bytes:
        h = self._base.copy()
        h.update(b"\n".join(leaves))
        return h.digest()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key (both are accepted)."""
    data = _read(path, "public key")
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
            raise LedgerInputError(f"{path}: not an Ed25519 key ({type(private).__name__})")
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise LedgerInputError(f"{path}: not a PEM Ed25519 public key ({str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerInputError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


class CheckpointFormatError(ValueError):
    """A checkpoint that is not a well-formed tlog-checkpoint signed note."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: the log ``origin`` had ``size`` records with RFC 9162 root ``root``.

    ``note`` is the signed note as stored (text and signature lines); ``time`` is the
    writer's clock when it signed, kept for metrics only (it is not signed: witnesses
    timestamp checkpoints with their own clocks).
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()
    note: bytes = b""
    time: float = field(default=0.0, compare=False)

    def text(self) -> bytes:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return ("\n".join(lines) + "\n").encode()

    def signed(self, key: Ed25519PrivateKey, time: float = 0.0, kid: bytes | None = None) -> Checkpoint:
        text = self.text()
        return Checkpoint(self.origin, self.size, self.root, self.extensions, c2sp.signed_note(text, c2sp.sign(text, self.origin, key, kid)), time)

    @property
    def actions(self) -> tuple[str, ...]:
        """The operator actions (hex SHA-256 of each action note) this checkpoint commits to."""
        return tuple(e[len(ACTION_LINE) :] for e in self.extensions if e.startswith(ACTION_LINE))

    def signatures(self) -> list[c2sp.Signature]:
        return c2sp.split(self.note)[1]

    def verified_by(self, log: c2sp.Verifier) -> bool:
        """True when one signature line is ``log``'s and verifies (others, e.g. cosignatures, are ignored)."""
        text, sigs = c2sp.split(self.note)
        return any(c2sp.valid(text, s, log) for s in sigs if c2sp.matches(s, log))


def parse_text(text: bytes) -> Checkpoint:
    """The fields of a tlog-checkpoint note text (origin, size, root, extension lines)."""
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise CheckpointFormatError("checkpoint is not UTF-8") from None
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise CheckpointFormatError("checkpoint text is not origin, size, root and non-empty extension lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")) or not size_text.isascii():
        raise CheckpointFormatError(f"checkpoint size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise CheckpointFormatError("checkpoint root is not base64") from None
    if len(root) != 32 or base64.b64encode(root).decode() != root_text:
        raise CheckpointFormatError("checkpoint root is not 32 bytes in canonical base64")
    size = int(size_text)
    if size == 0 and root != EMPTY_ROOT:
        raise CheckpointFormatError("an empty checkpoint must carry the empty tree's root")
    return Checkpoint(origin, size, root, tuple(lines[3:-1]))


def parse_checkpoint(signed: bytes) -> Checkpoint:
    """A stored signed checkpoint note (its signatures are checked by ``verified_by``)."""
    try:
        text, _sigs = c2sp.split(signed)
    except c2sp.NoteError as exc:
        raise CheckpointFormatError(str(exc)) from None
    cp = parse_text(text)
    return Checkpoint(cp.origin, cp.size, cp.root, cp.extensions, signed)


def log_verifier(origin: str, public: Ed25519PublicKey) -> c2sp.Verifier:
    """The note verifier of the log: key name = origin (tlog-checkpoint: SHOULD match)."""
    try:
        return c2sp.verifier(origin, public)
    except c2sp.NoteError as exc:
        raise LedgerInputError(f"origin {origin!r}: {exc}") from None
