"""Sealed tokens: opaque, unforgeable values the broker hands out and takes back (cursors).

A sealed token is AES-256-GCM (NIST SP 800-38D,
https://csrc.nist.gov/pubs/sp/800/38/d/final) over a small JSON document, under
a key derived once from the master key by HKDF-SHA256 (RFC 5869) with a label of
its own, so every broker process with the same master key opens every other's
tokens. The associated data names whom the token was issued to and for what
(recipient, contract, query): a token shown by anyone else, or for another
query, fails authentication exactly like a forged or altered one. Its content
(a record id, an instant) is never readable by the holder.

Layout: unpadded base64url of ``version (1 byte) || nonce (12) || ciphertext+tag``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Iterable
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.protection.keys import MASTER_KEY_MIN_BYTES

_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12
_SALT: Final = b"vehicle-data-broker/sealed-token/salt/v1"
_INFO: Final = b"vehicle-data-broker/sealed-token/v1"
#: A token longer than this is not one the broker issued (nothing is decoded).
MAX_TOKEN_CHARS: Final = 2048


class UnsealError(ValueError):
    """The token is malformed, forged, altered, or issued to someone or something else."""


def derive_sealing_key(master_key: bytes) -> bytes:
    """The 32-byte key of sealed tokens (HKDF-SHA256 of the master key, its own label)."""
    if len(master_key) < MASTER_KEY_MIN_BYTES:
        raise ValueError(f"the master key needs at least {MASTER_KEY_MIN_BYTES} bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(master_key)


def associated_data(purpose: str, parts: Iterable[str]) -> bytes:
    """The associated data of a token: its purpose and what it is bound to, unambiguous."""
    encoded = [purpose, *parts]
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in encoded)


class Sealer:
    """Seals and opens tokens under one key (see the module docstring)."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a sealing key has 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_master_key(cls, master_key: bytes) -> Sealer:
        return cls(derive_sealing_key(master_key))

    def seal(self, content: dict[str, Any], aad: bytes) -> str:
        plaintext = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        blob = _VERSION + nonce + self._aead.encrypt(nonce, plaintext, _VERSION + aad)
        return base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def open(self, token: str, aad: bytes) -> dict[str, Any]:
        """The content of ``token`` if it was sealed with ``aad``; raises UnsealError."""
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise UnsealError("not a sealed token")
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise UnsealError("not a sealed token") from None
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
            raise UnsealError("not a sealed token")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            plaintext = self._aead.decrypt(nonce, sealed, _VERSION + aad)
        except InvalidTag:
            raise UnsealError("the token was not issued for this caller and query") from None
        content = json.loads(plaintext)
        if not isinstance(content, dict):
            raise UnsealError("not a sealed token")
        return content
