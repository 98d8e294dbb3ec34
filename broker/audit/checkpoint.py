"""Signed checkpoints of the audit tree: a C2SP checkpoint in a C2SP signed note, Ed25519.

A checkpoint commits to the audit log's first ``size`` entries by their RFC 9162
root hash, at a time, under a key whose private half lives in a file outside
the database: whoever can rewrite the database cannot sign a new checkpoint, so
a log edited and rehashed end to end no longer matches the last one signed.

The note (``origin``, decimal size, base64 root, then one extension line with
the time) is signed as a whole; its signature line carries the C2SP key ID
``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``::

    vehicle-data-broker/audit
    10000
    b3JpZ2luIHJvb3QgaGFzaCBoZXJlLCAzMiBieXRlcyBsb25nIQ==
    time 2026-03-02T08:00:00Z

    — vehicle-data-broker/audit AbCdEf...==

https://c2sp.org/tlog-checkpoint and https://c2sp.org/signed-note
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.audit.merkle import HASH_SIZE
from broker.clock import ensure_utc, format_instant, parse_instant
from broker.errors import BrokerError

#: The log's name: the first line of every checkpoint and the signing key's name.
DEFAULT_ORIGIN = "vehicle-data-broker/audit"

_ED25519 = b"\x01"  # the signed-note signature type of Ed25519
_DASH = "\u2014"  # em dash, which opens a signature line
_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]*")
_MAX_NOTE = 8192


class InvalidCheckpoint(BrokerError):
    """A checkpoint that cannot be read, or whose signature does not verify."""

    code = "invalid_checkpoint"
    status = 422
    title = "Invalid audit checkpoint"


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The C2SP signed-note key ID of an Ed25519 key (4 bytes)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519 + raw).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """The audit tree's first ``size`` leaves have root ``root``, signed at ``at``."""

    origin: str
    size: int
    root: bytes
    at: datetime
    key_name: str
    key_id: str  # the C2SP key ID, 8 hex digits
    signature: bytes

    def text(self) -> str:
        """The signed text: the checkpoint body, ending in a newline."""
        return _body(self.origin, self.size, self.root, self.at)

    def note(self) -> str:
        """The whole signed note, ready to store, print or hand to a witness."""
        blob = base64.b64encode(bytes.fromhex(self.key_id) + self.signature).decode("ascii")
        return f"{self.text()}\n{_DASH} {self.key_name} {blob}\n"

    @property
    def root_hex(self) -> str:
        return self.root.hex()

    @classmethod
    def parse(cls, note: str) -> Checkpoint:
        """Read a note *without* checking its signature (see :class:`CheckpointVerifier`)."""
        if len(note) > _MAX_NOTE:
            raise InvalidCheckpoint("the checkpoint note is too long")
        if any(ord(c) < 0x20 and c != "\n" for c in note):
            raise InvalidCheckpoint("a checkpoint note holds no control characters")
        text, sep, signatures = note.rpartition("\n\n")
        if not sep or not signatures.endswith("\n"):
            raise InvalidCheckpoint("not a signed note: no blank line before the signature")
        lines = text.split("\n")
        if len(lines) != 4 or not lines[3].startswith("time "):
            raise InvalidCheckpoint("a checkpoint has an origin, a size, a root and a time")
        origin, size_text, root_text, time_line = lines
        if not _NAME.fullmatch(origin):
            raise InvalidCheckpoint("the checkpoint origin is empty or has spaces")
        if not _SIZE.fullmatch(size_text):
            raise InvalidCheckpoint("the checkpoint size is not a decimal number")
        root = _b64(root_text, "root hash")
        if len(root) != HASH_SIZE:
            raise InvalidCheckpoint("the checkpoint root is not a SHA-256 hash")
        try:
            at = parse_instant(time_line.removeprefix("time "))
        except ValueError as exc:
            raise InvalidCheckpoint(f"the checkpoint time is not RFC 3339: {exc}") from None
        signature_lines = signatures[:-1].split("\n")
        if len(signature_lines) != 1:
            raise InvalidCheckpoint("an audit checkpoint carries exactly one signature")
        parts = signature_lines[0].split(" ")
        if len(parts) != 3 or parts[0] != _DASH or not _NAME.fullmatch(parts[1]):
            raise InvalidCheckpoint("malformed signature line")
        blob = _b64(parts[2], "signature")
        if len(blob) != 4 + 64:
            raise InvalidCheckpoint("not an Ed25519 note signature")
        checkpoint = cls(
            origin=origin,
            size=int(size_text),
            root=root,
            at=at,
            key_name=parts[1],
            key_id=blob[:4].hex(),
            signature=blob[4:],
        )
        if checkpoint.text() != text + "\n":
            raise InvalidCheckpoint("the checkpoint is not in canonical form")
        return checkpoint


class CheckpointSigner:
    """Signs checkpoints with an Ed25519 key kept in a PEM (PKCS #8) file."""

    def __init__(self, private_key: Ed25519PrivateKey, *, origin: str = DEFAULT_ORIGIN) -> None:
        if not _NAME.fullmatch(origin):
            raise ValueError("the origin is a non-empty name without spaces or '+'")
        self._key = private_key
        self.origin = origin
        self.key_id = key_id(origin, private_key.public_key()).hex()

    @classmethod
    def from_file(cls, path: str | Path, *, origin: str = DEFAULT_ORIGIN) -> CheckpointSigner:
        """Load the signing key from an unencrypted PEM PKCS #8 file."""
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise InvalidCheckpoint(f"cannot load the audit signing key {path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidCheckpoint(f"the audit signing key {path} is not an Ed25519 key")
        return cls(key, origin=origin)

    @classmethod
    def generate(cls, path: str | Path, *, origin: str = DEFAULT_ORIGIN) -> CheckpointSigner:
        """Write a new key to ``path`` (mode 0600; an existing file is never overwritten)."""
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)  # whatever the umask
            out.write(pem)
        return cls(key, origin=origin)

    def public_key_pem(self) -> bytes:
        """The public key (PEM SubjectPublicKeyInfo), to give to verifiers."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verifier(self) -> CheckpointVerifier:
        return CheckpointVerifier(self._key.public_key(), origin=self.origin)

    def sign(self, size: int, root: bytes, at: datetime) -> Checkpoint:
        if size < 0 or len(root) != HASH_SIZE:
            raise ValueError("a checkpoint needs a size >= 0 and a 32-byte root")
        at = ensure_utc(at)
        text = _body(self.origin, size, root, at)
        return Checkpoint(
            origin=self.origin,
            size=size,
            root=bytes(root),
            at=at,
            key_name=self.origin,
            key_id=self.key_id,
            signature=self._key.sign(text.encode("utf-8")),
        )


class CheckpointVerifier:
    """Checks checkpoint notes against the log's public key (and its origin)."""

    def __init__(self, public_key: Ed25519PublicKey, *, origin: str = DEFAULT_ORIGIN) -> None:
        self._key = public_key
        self.origin = origin
        self.key_id = key_id(origin, public_key).hex()

    @classmethod
    def from_pem(cls, pem: bytes, *, origin: str = DEFAULT_ORIGIN) -> CheckpointVerifier:
        """From a PEM public key, or from the private key's PEM file contents."""
        try:
            key: object = serialization.load_pem_public_key(pem)
        except ValueError:
            try:
                key = serialization.load_pem_private_key(pem, password=None).public_key()
            except (ValueError, TypeError) as exc:
                raise InvalidCheckpoint(f"not a PEM Ed25519 key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidCheckpoint("the audit verification key is not an Ed25519 key")
        return cls(key, origin=origin)

    @classmethod
    def from_file(cls, path: str | Path, *, origin: str = DEFAULT_ORIGIN) -> CheckpointVerifier:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidCheckpoint(
                f"cannot read the audit verification key {path}: {exc}"
            ) from None
        return cls.from_pem(pem, origin=origin)

    def verify(self, note: str | Checkpoint) -> Checkpoint:
        """The checkpoint, if its note is well formed and signed by this key; else raises
        :class:`InvalidCheckpoint` saying why."""
        checkpoint = Checkpoint.parse(note) if isinstance(note, str) else note
        if checkpoint.origin != self.origin:
            raise InvalidCheckpoint(
                f"the checkpoint is for log {checkpoint.origin!r}, not {self.origin!r}"
            )
        if checkpoint.key_name != self.origin or checkpoint.key_id != self.key_id:
            raise InvalidCheckpoint(
                f"the checkpoint is signed by an unknown key "
                f"({checkpoint.key_name} {checkpoint.key_id}; expected {self.key_id})"
            )
        try:
            self._key.verify(checkpoint.signature, checkpoint.text().encode("utf-8"))
        except InvalidSignature:
            raise InvalidCheckpoint("the checkpoint signature does not verify") from None
        return checkpoint


def _body(origin: str, size: int, root: bytes, at: datetime) -> str:
    root_text = base64.b64encode(root).decode("ascii")
    return f"{origin}\n{size}\n{root_text}\ntime {format_instant(at)}\n"


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidCheckpoint(f"the checkpoint {what} is not base64") from None
