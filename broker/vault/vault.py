"""The vault: one data key per owner, kept wrapped in the store, used inside the caller's
transaction; destroying a key crypto-shreds everything sealed under it.

Owners are ``customer:<id>`` (:func:`customer_owner`), ``vehicle:<VIN>`` for data no
customer owns (:func:`vehicle_owner`), or ``broker:<purpose>``
(:data:`BROKER_QUARANTINE_OWNER`). A data key is created on first use, with
``INSERT ... ON CONFLICT DO NOTHING`` and a re-read, so two transactions creating
the same owner's key at once end up with one key. Destroying a key nulls its
wrapped form and keeps the row as a tombstone: an erased owner's data can no
longer be read, and no new data is sealed under the old owner id.

Unwrapped keys are cached in this process (bounded LRU, thread-safe: sessions
run in worker threads). Within the process a destroyed key is never used again:
:meth:`Vault.destroy` drops it from the cache and the owner is never cached
again, so a lookup that raced the destruction cannot put it back. Across
processes the cache is a caveat: a key another process destroys stays usable
here until its entry expires (``cache_ttl``, five minutes by default), is
evicted, or :meth:`Vault.forget` drops it. Build one vault per process (the
composition root does), or the caches are not shared.

Crypto-shredding holds as long as no copy of the wrapped key survives: database
backups, PostgreSQL's dead tuples until VACUUM, and SQLite's freed pages (unless
``PRAGMA secure_delete``) keep one for a while.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from broker.clock import Clock, ensure_utc
from broker.errors import BrokerError, ConfigurationError
from broker.protection.identifiers import IdentifierHasher, derive_index_key
from broker.protection.keys import MASTER_KEY_MIN_BYTES, load_master_key
from broker.store.tables import DataKeyRow
from broker.vault.envelope import (
    DecryptionFailed,
    derive_kek,
    generate_data_key,
    kek_id,
    open_sealed,
    seal,
    unwrap,
    wrap,
)

#: The owner of quarantined raw input that names no known customer or vehicle.
BROKER_QUARANTINE_OWNER: Final = "broker:quarantine"
#: The longest owner id (the width of ``data_key.owner``).
OWNER_MAX_CHARS: Final = 96
DEFAULT_CACHE_SIZE: Final = 4096
DEFAULT_CACHE_TTL: Final = timedelta(minutes=5)


class KeyDestroyed(BrokerError):
    """The owner's data key was destroyed (the owner was erased): nothing more is sealed."""

    code = "key_destroyed"
    status = 410
    title = "Data erased"


def customer_owner(customer_id: str) -> str:
    """The key owner of a customer's data."""
    if not customer_id:
        raise ValueError("a customer id is required")
    return "customer:" + customer_id


def vehicle_owner(vin: str) -> str:
    """The key owner of a vehicle's data when no customer owns it (VIN trimmed, upper case)."""
    normalised = vin.strip().upper()
    if not normalised:
        raise ValueError("a VIN is required")
    return "vehicle:" + normalised


class Vault:
    """Seals and opens data under per-owner data keys wrapped by the master key."""

    def __init__(
        self,
        master_key: bytes,
        clock: Clock,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_ttl: timedelta | None = DEFAULT_CACHE_TTL,
    ) -> None:
        if len(master_key) < MASTER_KEY_MIN_BYTES:
            raise ConfigurationError(f"the master key needs at least {MASTER_KEY_MIN_BYTES} bytes")
        if cache_size < 0:
            raise ValueError("cache_size is zero or more")
        self._kek = derive_kek(master_key)
        self._kek_id = kek_id(self._kek)
        self._identifier_hasher = IdentifierHasher(derive_index_key(master_key))
        self._clock = clock
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._cache: OrderedDict[str, tuple[bytes, datetime]] = OrderedDict()
        self._never_cache: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_key_source(cls, env_value: str | None, key_file: Path | None, clock: Clock) -> Vault:
        """A vault under the master key from the environment value, else the key file."""
        return cls(load_master_key(env_value, key_file), clock)

    @property
    def kek_id(self) -> str:
        """The fingerprint of this vault's key-encryption key, as stored with each data key."""
        return self._kek_id

    @property
    def identifier_hasher(self) -> IdentifierHasher:
        """The keyed hash of the customer identifier index (a key of its own)."""
        return self._identifier_hasher

    def encrypt(self, session: Session, owner: str, plaintext: bytes, aad: bytes) -> bytes:
        """``plaintext`` sealed under ``owner``'s data key (created on first use).

        Needs a write session the first time an owner is seen. Raises
        :class:`KeyDestroyed` if the owner's key was destroyed.
        """
        dek = self._data_key(session, owner, create=True)
        if dek is None:
            raise KeyDestroyed(
                f"the {_kind(owner)}'s data key was destroyed (erased): nothing more is kept"
            )
        return seal(dek, plaintext, aad)

    def decrypt(self, session: Session, owner: str, blob: bytes, aad: bytes) -> bytes | None:
        """The plaintext of ``blob``, or None if ``owner``'s key was destroyed (shredded).

        Raises :class:`DecryptionFailed` if the blob was tampered with or belongs
        elsewhere, and :class:`ConfigurationError` if the key was wrapped under
        another master key.
        """
        dek = self._data_key(session, owner, create=False)
        if dek is None:
            return None
        return open_sealed(dek, blob, aad)

    def encrypt_json(self, session: Session, owner: str, value: Any, aad: bytes) -> bytes:
        """``value`` as canonical JSON (sorted keys, UTF-8), sealed under ``owner``'s key."""
        return self.encrypt(session, owner, canonical_json(value), aad)

    def decrypt_json(self, session: Session, owner: str, blob: bytes, aad: bytes) -> Any | None:
        """The JSON value sealed in ``blob``, or None if ``owner``'s key was destroyed."""
        plaintext = self.decrypt(session, owner, blob, aad)
        if plaintext is None:
            return None
        try:
            return json.loads(plaintext.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DecryptionFailed("sealed data opened but is not UTF-8 JSON") from None

    def destroy(self, session: Session, owner: str, at: datetime) -> bool:
        """Destroy ``owner``'s data key as of ``at``; True if a live key was destroyed.

        Idempotent. An owner without a key gets a destroyed tombstone (and False),
        so nothing is ever sealed under that owner id afterwards either. The key
        leaves this process's cache at once and is never cached again.
        """
        _check_owner(owner)
        at = ensure_utc(at)
        with self._lock:
            self._cache.pop(owner, None)
            self._never_cache.add(owner)
        session.exec(
            _insert(session)
            .values(owner=owner, wrapped=None, kek_id=self._kek_id, created_at=at, destroyed_at=at)
            .on_conflict_do_nothing(index_elements=["owner"])
        )
        result = session.exec(
            sa.update(DataKeyRow)
            .where(
                col(DataKeyRow.owner) == owner,
                sa.or_(
                    col(DataKeyRow.destroyed_at).is_(None), col(DataKeyRow.wrapped).is_not(None)
                ),
            )
            .values(wrapped=None, destroyed_at=at)
        )
        return result.rowcount == 1

    def is_destroyed(self, session: Session, owner: str) -> bool:
        """Whether ``owner``'s data key was destroyed (False when it has none yet)."""
        _check_owner(owner)
        row = _read(session, owner)
        return row is not None and _destroyed(row)

    def forget(self, owner: str) -> None:
        """Drop ``owner``'s key from this process's cache (e.g. told another process erased it)."""
        with self._lock:
            self._cache.pop(owner, None)

    def clear_cache(self) -> None:
        """Drop every cached key."""
        with self._lock:
            self._cache.clear()

    def _data_key(self, session: Session, owner: str, *, create: bool) -> bytes | None:
        """``owner``'s data key, or None if destroyed."""
        _check_owner(owner)
        cached = self._cached(owner)
        if cached is not None:
            return cached
        row = _read(session, owner)
        if row is None:
            if not create:
                raise DecryptionFailed(f"no data key exists for this {_kind(owner)}")
            row = self._create(session, owner)
        if _destroyed(row) or row.wrapped is None:
            return None
        if row.kek_id != self._kek_id:
            raise ConfigurationError(
                f"a {_kind(owner)}'s data key is wrapped under master key {row.kek_id}, but the "
                f"configured master key is {self._kek_id}: start the broker with the master "
                "key it was started with before (BROKER_MASTER_KEY or its key file)"
            )
        dek = unwrap(self._kek, row.wrapped, owner)
        self._remember(owner, dek)
        return dek

    def _create(self, session: Session, owner: str) -> DataKeyRow:
        """Create ``owner``'s data key unless a concurrent transaction did; return the row."""
        dek = generate_data_key()
        session.exec(
            _insert(session)
            .values(
                owner=owner,
                wrapped=wrap(self._kek, dek, owner),
                kek_id=self._kek_id,
                created_at=self._clock.now(),
                destroyed_at=None,
            )
            .on_conflict_do_nothing(index_elements=["owner"])
        )
        row = _read(session, owner)
        if row is None:  # pragma: no cover - the insert or a committed rival put it there
            raise DecryptionFailed("a data key vanished while it was being created")
        return row

    def _cached(self, owner: str) -> bytes | None:
        with self._lock:
            entry = self._cache.get(owner)
            if entry is None:
                return None
            dek, cached_at = entry
            if self._cache_ttl is not None:
                age = self._clock.now() - cached_at
                if age > self._cache_ttl or age < timedelta(0):
                    del self._cache[owner]
                    return None
            self._cache.move_to_end(owner)
            return dek

    def _remember(self, owner: str, dek: bytes) -> None:
        if self._cache_size == 0:
            return
        with self._lock:
            if owner in self._never_cache:
                return
            self._cache[owner] = (dek, self._clock.now())
            self._cache.move_to_end(owner)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def __repr__(self) -> str:
        return f"Vault(kek_id={self._kek_id!r})"


def canonical_json(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8; NaN and infinities refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _read(session: Session, owner: str) -> DataKeyRow | None:
    statement = (
        select(DataKeyRow)
        .where(col(DataKeyRow.owner) == owner)
        .execution_options(populate_existing=True)
    )
    return session.exec(statement).first()


def _destroyed(row: DataKeyRow) -> bool:
    return row.destroyed_at is not None or row.wrapped is None


def _insert(session: Session) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``data_key`` in the session's dialect (for ``ON CONFLICT``)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(DataKeyRow)
    if dialect == "sqlite":
        return sqlite.insert(DataKeyRow)
    raise ConfigurationError(f"the vault supports SQLite and PostgreSQL, not {dialect}")


def _check_owner(owner: str) -> None:
    if not owner or len(owner) > OWNER_MAX_CHARS:
        raise ValueError(f"a key owner has 1 to {OWNER_MAX_CHARS} characters")


def _kind(owner: str) -> str:
    """The kind of an owner (``customer``, ``vehicle``, ``broker``), for messages."""
    return owner.split(":", 1)[0] if ":" in owner else "owner"
