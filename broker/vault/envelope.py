"""Envelope encryption: AES-256-GCM data keys, wrapped by a key-encryption key.

Pure: no database, no web framework. AES-GCM is NIST SP 800-38D
(https://csrc.nist.gov/pubs/sp/800/38/d/final), used through ``cryptography``.

- A **data key** (DEK) is 32 random bytes, one per owner (a customer, a vehicle
  without a customer, or a broker purpose). Destroying it crypto-shreds
  everything sealed under it.
- The **key-encryption key** (KEK) is derived from the master key by HKDF-SHA256
  (RFC 5869) with a label of its own, so the master key itself is never an AES key
  and stays apart from the pseudonym keys derived from it.
- **Wrapping** a data key is AES-256-GCM under the KEK, with a random 96-bit nonce
  and the owner as associated data. Chosen over AES key wrap (RFC 3394/5649)
  because key wrap takes no associated data: binding a wrapped key to its owner
  would need a KEK derived per owner, while GCM binds it directly, so a wrapped key
  copied to another owner's row fails to unwrap. There is one wrap per owner, so
  random nonces are far from the 2^32 messages per key that SP 800-38D allows.
- **Sealing** data is AES-256-GCM under the data key with a random 96-bit nonce and
  the caller's associated data (which record, which table), so a ciphertext moved
  to another record fails. One data key may seal up to 2^32 messages (SP 800-38D,
  8.3): decades of per-second telemetry for one owner.

A blob (sealed data or a wrapped key) is ``version (1 byte) || nonce (12 bytes) ||
ciphertext || tag (16 bytes)``; version 1 is AES-256-GCM. Any failure to open
one (tampered, truncated, wrong key, wrong associated data, unknown version)
raises :class:`DecryptionFailed`, whose message never contains the data.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.errors import BrokerError
from broker.protection.keys import MASTER_KEY_MIN_BYTES

#: The blob format this module writes: AES-256-GCM, 96-bit random nonce, 128-bit tag.
FORMAT_AES256_GCM: Final = 1
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
#: Bytes a blob adds to its plaintext.
OVERHEAD: Final = 1 + NONCE_BYTES + TAG_BYTES

_KEK_SALT: Final = b"vehicle-data-broker/key-encryption-key/salt/v1"
_KEK_INFO: Final = b"vehicle-data-broker/key-encryption-key/v1"
_KEK_ID_LABEL: Final = b"vehicle-data-broker/kek-id/v1\x00"
_WRAP_LABEL: Final = b"vehicle-data-broker/data-key-wrap/v1\x00"


class DecryptionFailed(BrokerError):
    """A stored ciphertext did not open: tampered, truncated, or under another key or AAD."""

    code = "decryption_failed"
    status = 500
    title = "Stored data could not be decrypted"


def generate_data_key() -> bytes:
    """A fresh data key: 32 bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def derive_kek(master_key: bytes) -> bytes:
    """The 32-byte key-encryption key of a master key (HKDF-SHA256, a label of its own)."""
    if len(master_key) < MASTER_KEY_MIN_BYTES:
        raise ValueError(f"a master key has at least {MASTER_KEY_MIN_BYTES} bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_KEK_SALT, info=_KEK_INFO)
    return hkdf.derive(master_key)


def kek_id(kek: bytes) -> str:
    """A short public fingerprint of a KEK (16 hex digits), stored beside each wrapped key.

    It tells "this key was wrapped under another master key" apart from tampering;
    64 bits of a domain-separated SHA-256 reveal nothing usable about the key.
    """
    _check_key(kek, "a key-encryption key")
    return hashlib.sha256(_KEK_ID_LABEL + kek).digest()[:8].hex()


def associated_data(*parts: str) -> bytes:
    """Associated data naming where a ciphertext belongs (e.g. table, record id).

    Each part is length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` differ.
    """
    return b"".join(_length_prefixed(part) for part in parts)


def wrap(kek: bytes, dek: bytes, owner: str) -> bytes:
    """``dek`` encrypted under ``kek``, bound to ``owner``."""
    _check_key(kek, "a key-encryption key")
    _check_key(dek, "a data key")
    return _seal(kek, dek, _wrap_aad(owner))


def unwrap(kek: bytes, wrapped: bytes, owner: str) -> bytes:
    """The data key in ``wrapped``; :class:`DecryptionFailed` unless wrapped for ``owner``."""
    _check_key(kek, "a key-encryption key")
    dek = _open(kek, wrapped, _wrap_aad(owner), what="wrapped data key")
    if len(dek) != KEY_BYTES:
        raise DecryptionFailed("a wrapped data key held a value of the wrong length")
    return dek


def seal(dek: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``plaintext`` encrypted and authenticated under ``dek``, bound to ``aad``."""
    _check_key(dek, "a data key")
    return _seal(dek, plaintext, aad)


def open_sealed(dek: bytes, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of a :func:`seal` blob; :class:`DecryptionFailed` on any mismatch."""
    _check_key(dek, "a data key")
    return _open(dek, blob, aad, what="sealed data")


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, bytes(plaintext), bytes(aad))
    return bytes([FORMAT_AES256_GCM]) + nonce + ciphertext


def _open(key: bytes, blob: bytes, aad: bytes, *, what: str) -> bytes:
    if len(blob) < OVERHEAD:
        raise DecryptionFailed(f"the {what} is truncated ({len(blob)} bytes)")
    if blob[0] != FORMAT_AES256_GCM:
        raise DecryptionFailed(f"the {what} has unknown format version {blob[0]}")
    nonce = bytes(blob[1 : 1 + NONCE_BYTES])
    try:
        return AESGCM(key).decrypt(nonce, bytes(blob[1 + NONCE_BYTES :]), bytes(aad))
    except InvalidTag:
        raise DecryptionFailed(
            f"the {what} failed authentication: tampered, or sealed under another key "
            "or for another place"
        ) from None


def _wrap_aad(owner: str) -> bytes:
    if not owner:
        raise ValueError("a data key needs an owner")
    return _WRAP_LABEL + _length_prefixed(owner)


def _check_key(key: bytes, name: str) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name} has {KEY_BYTES} bytes, not {len(key)}")


def _length_prefixed(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw
