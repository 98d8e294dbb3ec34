"""Pseudonym keys: the master key, one derived key per (recipient, contract), and pseudonyms.

The master key lives outside the database (an environment variable or a key
file); the broker never stores it. For every (recipient, contract) pair a key is
derived with HKDF-SHA256 (RFC 5869, https://www.rfc-editor.org/rfc/rfc5869),
and a pseudonym is the HMAC-SHA256 (RFC 2104) of the value under that key.

The derivation uses the recipient id and the contract id only, never the
contract version: a recipient keeps seeing the same pseudonym for a vehicle
when the contract is amended, while two recipients (or two contracts of one
recipient) see unrelated pseudonyms and cannot link their data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.errors import ConfigurationError

#: A master key shorter than this (256 bits) is refused.
MASTER_KEY_MIN_BYTES: Final = 32
#: Every pseudonym starts with this, so it is recognisable in any payload or log.
PSEUDONYM_PREFIX: Final = "psn_"
#: 26 base32 characters: the first 130 bits of the HMAC (128 bits of it significant).
PSEUDONYM_CHARS: Final = 26
#: Length of every pseudonym, prefix included.
PSEUDONYM_LENGTH: Final = len(PSEUDONYM_PREFIX) + PSEUDONYM_CHARS

#: Pseudonym kinds: a VIN, and any other identifier of a data subject.
KIND_VIN: Final = "vin"
KIND_IDENTIFIER: Final = "identifier"

_HKDF_SALT: Final = b"vehicle-data-broker/pseudonym-key/salt/v1"
_HKDF_INFO: Final = b"vehicle-data-broker/pseudonym-key/v1"
_HEX = re.compile(r"[0-9A-Fa-f]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def generate_master_key() -> str:
    """A fresh random master key of 256 bits, as unpadded base64url."""
    return base64.urlsafe_b64encode(secrets.token_bytes(MASTER_KEY_MIN_BYTES)).decode().rstrip("=")


def load_master_key(env_value: str | None, key_file: Path | None) -> bytes:
    """The master key from the environment value, else from the key file.

    Either holds base64url (padded or not) or hex of at least 32 bytes. A missing,
    unreadable, malformed or short key raises ConfigurationError; the message never
    contains the key.
    """
    if env_value is not None and env_value.strip():
        return parse_master_key(env_value, source="the environment")
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigurationError(
                f"cannot read the master key file {key_file.name}: {reason}"
            ) from None
        return parse_master_key(text, source=f"key file {key_file.name}")
    raise ConfigurationError("no master key: set it in the environment or give a key file")


def parse_master_key(text: str, *, source: str = "the master key") -> bytes:
    """Decode a master key written as hex or base64url; refuse it if under 32 bytes."""
    value = text.strip()
    if not value:
        raise ConfigurationError(f"the master key from {source} is empty")
    if _HEX.fullmatch(value) and len(value) % 2 == 0:
        key = bytes.fromhex(value)
    elif _BASE64URL.fullmatch(value):
        key = _decode_base64url(value, source)
    else:
        raise ConfigurationError(f"the master key from {source} is neither hex nor base64url")
    if len(key) < MASTER_KEY_MIN_BYTES:
        raise ConfigurationError(
            f"the master key from {source} has {len(key)} bytes; "
            f"at least {MASTER_KEY_MIN_BYTES} are required"
        )
    return key


def _decode_base64url(value: str, source: str) -> bytes:
    bare = value.rstrip("=")
    try:
        key = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"the master key from {source} is malformed base64url") from None
    if base64.urlsafe_b64encode(key).decode().rstrip("=") != bare:
        raise ConfigurationError(f"the master key from {source} is malformed base64url")
    return key


def derive_pseudonym_key(master_key: bytes, recipient_id: str, contract_id: str) -> bytes:
    """The 32-byte pseudonym key of one (recipient, contract), by HKDF-SHA256.

    The contract version takes no part, so pseudonyms survive amendments.
    """
    if len(master_key) < MASTER_KEY_MIN_BYTES:
        raise ConfigurationError(f"the master key needs at least {MASTER_KEY_MIN_BYTES} bytes")
    if not recipient_id or not contract_id:
        raise ValueError("a pseudonym key needs a recipient id and a contract id")
    info = _HKDF_INFO + _length_prefixed(recipient_id) + _length_prefixed(contract_id)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=info)
    return hkdf.derive(master_key)


def normalise_vin(vin: str) -> str:
    """A VIN as pseudonymised: trimmed, upper case."""
    return vin.strip().upper()


def normalise_identifier(value: str) -> str:
    """An identifier as pseudonymised: single spaces, case folded (``Jan  Smit`` = ``jan smit``)."""
    return " ".join(value.split()).casefold()


def _length_prefixed(text: str) -> bytes:
    """``text`` as UTF-8 behind its 4-byte length, so concatenations never collide."""
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


class Pseudonymiser:
    """Turns values into pseudonyms under the key of one (recipient, contract).

    A pseudonym is ``psn_`` and 26 lowercase base32 characters: deterministic for
    a (kind, value), unlinkable without the key. ``recipient_id`` and
    ``contract_id`` say whose key it is, so a mis-wired key is caught.
    """

    __slots__ = ("_key", "contract_id", "recipient_id")

    def __init__(
        self, key: bytes, *, recipient_id: str | None = None, contract_id: str | None = None
    ) -> None:
        if len(key) < MASTER_KEY_MIN_BYTES:
            raise ValueError(f"a pseudonym key has at least {MASTER_KEY_MIN_BYTES} bytes")
        self._key = bytes(key)
        self.recipient_id = recipient_id
        self.contract_id = contract_id

    @classmethod
    def for_contract(cls, master_key: bytes, recipient_id: str, contract_id: str) -> Pseudonymiser:
        """The pseudonymiser of ``recipient_id`` under contract ``contract_id``."""
        key = derive_pseudonym_key(master_key, recipient_id, contract_id)
        return cls(key, recipient_id=recipient_id, contract_id=contract_id)

    def pseudonym(self, kind: str, value: str) -> str:
        """The pseudonym of ``value`` as a ``kind`` (e.g. ``vin``, ``identifier``)."""
        message = _length_prefixed(kind) + value.encode("utf-8")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        encoded = base64.b32encode(digest[:17]).decode("ascii").lower()
        return PSEUDONYM_PREFIX + encoded[:PSEUDONYM_CHARS]

    def vehicle(self, vin: str) -> str:
        """The pseudonym of a vehicle (its VIN, trimmed and upper-cased)."""
        return self.pseudonym(KIND_VIN, normalise_vin(vin))

    def identifier(self, value: str) -> str:
        """The pseudonym of a subject identifier (whitespace collapsed, case folded)."""
        return self.pseudonym(KIND_IDENTIFIER, normalise_identifier(value))

    def __repr__(self) -> str:
        return (
            f"Pseudonymiser(recipient_id={self.recipient_id!r}, contract_id={self.contract_id!r})"
        )
