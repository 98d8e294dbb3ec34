"""Credential hashing: slow, memory-hard hashes for customer passwords (Argon2id),
fast keyed digests for high-entropy client secrets (so the token endpoint stays fast).
"""

from __future__ import annotations

import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()  # Argon2id with the library's current recommended parameters
_SECRET_PREFIX = "sha256:"  # noqa: S105 - a label, not a secret


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def digest_client_secret(secret: str) -> str:
    """A digest of a high-entropy client secret (never a password)."""
    return _SECRET_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def verify_client_secret(digest: str, secret: str) -> bool:
    return hmac.compare_digest(digest.encode(), digest_client_secret(secret).encode())
