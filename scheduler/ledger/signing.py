"""Ed25519 signing keys and signed checkpoints (RFC 9162 signed tree heads, C2SP note style).

A checkpoint commits to the whole log at one size: ``origin`` (this ledger's random id),
``size``, ``root`` (RFC 9162 MTH), ``time`` and ``prev`` (SHA-256 of the previous
checkpoint's body and signature). The body is a few text lines, signed as bytes, so an
auditor can read it and check it with any Ed25519 tool; ``prev`` chains every checkpoint
to the last one, so one valid signature at the end vouches for all of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scheduler.errors import LedgerError
from scheduler.paths import state_dir

HEADER = "mcsched-ledger-checkpoint/v1"
NO_PREV = "0" * 64
KEY_NAME = "ledger-signing.key"
PUB_NAME = "ledger-signing.pub"


def default_key_path(home: str | Path | None = None) -> Path:
    """``$MCSCHED_SIGNING_KEY`` (a mounted Kubernetes Secret) or ``ledger-signing.key`` in ``home`` / ``$MCSCHED_HOME``."""
    env = os.environ.get("MCSCHED_SIGNING_KEY")
    return Path(env) if env else Path(home or state_dir()) / KEY_NAME


def public_path_for(key_path: Path) -> Path:
    """The public key lives beside the private one: ``ledger-signing.key`` -> ``ledger-signing.pub``."""
    return key_path.with_suffix(".pub") if key_path.suffix == ".key" else key_path.with_name(key_path.name + ".pub")


def default_public_key_path() -> Path:
    env = os.environ.get("MCSCHED_PUBLIC_KEY")
    return Path(env) if env else public_path_for(default_key_path())


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_key(key_path: Path) -> Ed25519PrivateKey:
    """Create a new key file (0600, never overwritten) and its public key beside it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        key_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_private_key(key_path)
    except OSError as exc:
        raise LedgerError(f"{key_path}: cannot create the ledger signing key ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(key_path, 0o600)
    try:
        public_path_for(key_path).write_bytes(_public_pem(key.public_key()))
    except OSError as exc:
        raise LedgerError(f"{public_path_for(key_path)}: cannot write the public key ({exc.strerror})") from None
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def load_private_key(key_path: Path) -> Ed25519PrivateKey:
    data = _read(key_path, "ledger signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise LedgerError(f"{key_path}: not a PEM Ed25519 private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerError(f"{key_path}: not an Ed25519 private key")
    pub = public_path_for(key_path)
    if not pub.exists() and os.access(pub.parent, os.W_OK):
        pub.write_bytes(_public_pem(key.public_key()))
    return key


def load_or_create_key(key_path: Path) -> Ed25519PrivateKey:
    """The signing key at ``key_path``, created (0600) on first use."""
    return load_private_key(key_path) if key_path.exists() else generate_key(key_path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key (both are accepted)."""
    data = _read(path, "public key")
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
            raise LedgerError(f"{path}: not an Ed25519 key")
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise LedgerError(f"{path}: not a PEM Ed25519 public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerError(f"{path}: not an Ed25519 public key")
    return key


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: the log ``origin`` had ``size`` records with MTH ``root`` at ``time``."""

    origin: str
    size: int
    root: bytes
    time: float
    prev: str
    key: str
    signature: bytes = b""
    encoded: bytes = b""  # the body as parsed (canonical, so equal to what body() would build)

    def body(self) -> bytes:
        if self.encoded:
            return self.encoded
        root = base64.b64encode(self.root).decode()
        return f"{HEADER}\n{self.origin}\n{self.size}\n{root}\ntime {self.time!r}\nprev {self.prev}\nkey {self.key}\n".encode()

    def digest(self) -> str:
        """What the next checkpoint's ``prev`` names: SHA-256(body || signature)."""
        return hashlib.sha256(self.body() + self.signature).hexdigest()

    def signed(self, key: Ed25519PrivateKey) -> Checkpoint:
        body = self.body()
        return Checkpoint(self.origin, self.size, self.root, self.time, self.prev, self.key, key.sign(body), body)

    def valid(self, public: Ed25519PublicKey) -> bool:
        try:
            public.verify(self.signature, self.body())
        except InvalidSignature:
            return False
        return True


class CheckpointFormatError(ValueError):
    """A checkpoint body that is not in the one canonical form."""


def parse_checkpoint(body: bytes, signature: bytes) -> Checkpoint:
    """Parse a body in the ``Checkpoint.body`` format (its bytes, not a re-encoding, are what is bound)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise CheckpointFormatError("checkpoint is not ASCII text") from None
    lines = text.split("\n")
    if len(lines) != 8 or lines[0] != HEADER or lines[7] != "":
        raise CheckpointFormatError("checkpoint body is not in the mcsched-ledger-checkpoint/v1 format")
    try:
        size = int(lines[2])
        root = base64.b64decode(lines[3], validate=True)
        if not lines[4].startswith("time ") or not lines[5].startswith("prev ") or not lines[6].startswith("key "):
            raise ValueError("missing time, prev or key line")
        time = float(lines[4][5:])
    except (ValueError, binascii.Error) as exc:
        raise CheckpointFormatError(f"unreadable checkpoint ({exc})") from None
    if len(root) != 32 or len(lines[5]) != 69 or size < 1:
        raise CheckpointFormatError("checkpoint has a bad root, prev or size")
    # The raw bytes are kept: the next checkpoint's ``prev`` and the last signature bind them.
    return Checkpoint(lines[1], size, root, time, lines[5][5:], lines[6][4:], signature, body)
