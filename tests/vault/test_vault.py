"""The vault against the real store, on SQLite and PostgreSQL: one key per owner, created
once under concurrency, refused under the wrong master key, destroyed for good."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

import broker.vault.vault as vault_module
from broker.clock import ManualClock
from broker.errors import ConfigurationError
from broker.store.database import Database
from broker.store.tables import DataKeyRow
from broker.vault.envelope import DecryptionFailed, associated_data, derive_kek, kek_id, unwrap
from broker.vault.vault import (
    BROKER_QUARANTINE_OWNER,
    KeyDestroyed,
    Vault,
    customer_owner,
    vehicle_owner,
)

ANNA = customer_owner("c-anna")
BRAM = customer_owner("c-bram")
AAD = associated_data("telemetry_record", "r-1")
MASTER_KEY = bytes(range(32))  # the vault fixture's
OTHER_MASTER_KEY = bytes(range(100, 132))


def encrypt(db: Database, vault: Vault, owner: str, plaintext: bytes, aad: bytes = AAD) -> bytes:
    return db.run_sync(lambda s: vault.encrypt(s, owner, plaintext, aad), write=True)


def decrypt(db: Database, vault: Vault, owner: str, blob: bytes, aad: bytes = AAD) -> bytes | None:
    return db.run_sync(lambda s: vault.decrypt(s, owner, blob, aad))


def destroy(db: Database, vault: Vault, owner: str, clock: ManualClock) -> bool:
    return db.run_sync(lambda s: vault.destroy(s, owner, clock.now()), write=True)


def key_rows(db: Database) -> list[DataKeyRow]:
    return list(db.run_sync(lambda s: s.exec(select(DataKeyRow)).all()))


def counting_unwraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the owner of every unwrap the vault does (every cache miss)."""
    calls: list[str] = []

    def spy(kek: bytes, wrapped: bytes, owner: str) -> bytes:
        calls.append(owner)
        return unwrap(kek, wrapped, owner)

    monkeypatch.setattr(vault_module, "unwrap", spy)
    return calls


def test_owner_names() -> None:
    assert customer_owner("c-anna") == "customer:c-anna"
    assert vehicle_owner(" wmwxr31002ta10001 ") == "vehicle:WMWXR31002TA10001"
    assert BROKER_QUARANTINE_OWNER == "broker:quarantine"
    with pytest.raises(ValueError, match="customer id"):
        customer_owner("")
    with pytest.raises(ValueError, match="VIN"):
        vehicle_owner("  ")


def test_a_short_master_key_is_refused(clock: ManualClock) -> None:
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        Vault(bytes(31), clock)


def test_the_master_key_comes_from_the_environment_or_a_key_file(
    clock: ManualClock, tmp_path: Path
) -> None:
    expected = kek_id(derive_kek(MASTER_KEY))
    assert Vault.from_key_source(MASTER_KEY.hex(), None, clock).kek_id == expected
    key_file = tmp_path / "master.key"
    key_file.write_text(MASTER_KEY.hex() + "\n")
    assert Vault.from_key_source(None, key_file, clock).kek_id == expected
    with pytest.raises(ConfigurationError, match="no master key"):
        Vault.from_key_source(None, None, clock)
    assert MASTER_KEY.hex() not in repr(Vault(MASTER_KEY, clock))


def test_round_trip_creates_one_wrapped_key_per_owner(
    db: Database, vault: Vault, clock: ManualClock
) -> None:
    first = encrypt(db, vault, ANNA, b"52.37,4.89")
    second = encrypt(db, vault, ANNA, b"52.38,4.90")
    third = encrypt(db, vault, BRAM, b"51.92,4.47")
    fresh = Vault(MASTER_KEY, clock)  # no cache: reads and unwraps the stored key
    assert decrypt(db, fresh, ANNA, first) == b"52.37,4.89"
    assert decrypt(db, fresh, ANNA, second) == b"52.38,4.90"
    assert decrypt(db, fresh, BRAM, third) == b"51.92,4.47"

    rows = {row.owner: row for row in key_rows(db)}
    assert set(rows) == {ANNA, BRAM}
    anna = rows[ANNA]
    assert anna.kek_id == vault.kek_id
    assert anna.created_at == clock.now()
    assert anna.destroyed_at is None
    assert anna.wrapped is not None
    dek = unwrap(derive_kek(MASTER_KEY), anna.wrapped, ANNA)
    assert dek not in anna.wrapped
    bram_wrapped = rows[BRAM].wrapped
    assert bram_wrapped is not None
    assert unwrap(derive_kek(MASTER_KEY), bram_wrapped, BRAM) != dek


def test_one_owners_ciphertext_does_not_open_under_another_owner(
    db: Database, vault: Vault
) -> None:
    blob = encrypt(db, vault, ANNA, b"secret")
    encrypt(db, vault, BRAM, b"other")
    with pytest.raises(DecryptionFailed):
        decrypt(db, vault, BRAM, blob)


def test_wrong_aad_or_tampered_blob_is_refused(db: Database, vault: Vault) -> None:
    blob = encrypt(db, vault, ANNA, b"secret")
    with pytest.raises(DecryptionFailed):
        decrypt(db, vault, ANNA, blob, associated_data("telemetry_record", "r-2"))
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionFailed):
        decrypt(db, vault, ANNA, tampered)


def test_decrypting_for_an_owner_without_a_key_is_refused(db: Database, vault: Vault) -> None:
    blob = encrypt(db, vault, ANNA, b"secret")
    with pytest.raises(DecryptionFailed, match="no data key exists for this customer"):
        decrypt(db, vault, BRAM, blob)
    assert {row.owner for row in key_rows(db)} == {ANNA}


def test_a_wrong_master_key_is_diagnosed_by_its_kek_id(
    db: Database, vault: Vault, clock: ManualClock
) -> None:
    blob = encrypt(db, vault, ANNA, b"secret")
    wrong = Vault(OTHER_MASTER_KEY, clock)
    assert wrong.kek_id != vault.kek_id
    with pytest.raises(ConfigurationError) as caught:
        decrypt(db, wrong, ANNA, blob)
    message = str(caught.value)
    assert vault.kek_id in message
    assert wrong.kek_id in message
    assert "c-anna" not in message
    with pytest.raises(ConfigurationError, match="master key"):
        encrypt(db, wrong, ANNA, b"more")


def test_a_wrapped_key_copied_to_another_owners_row_does_not_unwrap(
    db: Database, vault: Vault, clock: ManualClock
) -> None:
    encrypt(db, vault, ANNA, b"anna's")
    bram_blob = encrypt(db, vault, BRAM, b"bram's")

    def swap(session: Session) -> None:
        anna = session.get(DataKeyRow, ANNA)
        bram = session.get(DataKeyRow, BRAM)
        assert anna is not None and bram is not None
        bram.wrapped = anna.wrapped
        session.add(bram)

    db.run_sync(swap, write=True)
    with pytest.raises(DecryptionFailed, match="wrapped data key"):
        decrypt(db, Vault(MASTER_KEY, clock), BRAM, bram_blob)


def test_json_round_trip(db: Database, vault: Vault, clock: ManualClock) -> None:
    value: dict[str, Any] = {"longitude": 4.895167, "latitude": 52.370216, "trip": ["t1"]}
    blob = db.run_sync(lambda s: vault.encrypt_json(s, ANNA, value, AAD), write=True)
    opened = db.run_sync(lambda s: Vault(MASTER_KEY, clock).decrypt_json(s, ANNA, blob, AAD))
    assert opened == value
    with pytest.raises(ValueError, match="Out of range float"):
        db.run_sync(lambda s: vault.encrypt_json(s, ANNA, float("nan"), AAD), write=True)


def test_concurrent_creation_makes_one_key(
    db: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transactions, each with its own vault (no shared cache), seal for a new owner at
    once; each holds its transaction open a moment so the others' inserts meet it."""
    workers = 4
    created: list[str] = []
    real_create = Vault._create

    def counting_create(self: Vault, session: Session, owner: str) -> DataKeyRow:
        created.append(owner)
        return real_create(self, session, owner)

    monkeypatch.setattr(Vault, "_create", counting_create)
    barrier = threading.Barrier(workers)
    blobs: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def work(number: int) -> None:
        vault = Vault(MASTER_KEY, clock)
        try:
            with db.session(write=True) as session:
                barrier.wait(timeout=10)
                blobs[number] = vault.encrypt(session, ANNA, f"m{number}".encode(), AAD)
                time.sleep(0.2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert [row.owner for row in key_rows(db)] == [ANNA]
    if not db.is_sqlite:  # SQLite's one writer serialises them; PostgreSQL races for real
        assert len(created) == workers
    reader = Vault(MASTER_KEY, clock)
    for number, blob in blobs.items():
        assert decrypt(db, reader, ANNA, blob) == f"m{number}".encode()


def test_creation_that_loses_the_race_uses_the_winners_key(
    db: Database, vault: Vault, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conflict path itself: the first read misses although a rival's key is stored."""
    rival = Vault(MASTER_KEY, clock)
    rival_blob = encrypt(db, rival, ANNA, b"rival's")
    real_read = vault_module._read
    missed: list[str] = []

    def stale_read(session: Session, owner: str) -> DataKeyRow | None:
        if not missed:
            missed.append(owner)
            return None
        return real_read(session, owner)

    monkeypatch.setattr(vault_module, "_read", stale_read)
    mine = encrypt(db, vault, ANNA, b"mine")
    assert missed == [ANNA]
    assert len(key_rows(db)) == 1
    assert decrypt(db, rival, ANNA, mine) == b"mine"
    assert decrypt(db, vault, ANNA, rival_blob) == b"rival's"


def test_destroy_shreds_and_refuses_new_data(
    db: Database, vault: Vault, clock: ManualClock
) -> None:
    blob = encrypt(db, vault, ANNA, b"secret")
    bram_blob = encrypt(db, vault, BRAM, b"bram's")
    clock.advance(timedelta(days=3))
    assert destroy(db, vault, ANNA, clock) is True
    assert destroy(db, vault, ANNA, clock) is False  # idempotent

    assert decrypt(db, vault, ANNA, blob) is None
    assert decrypt(db, Vault(MASTER_KEY, clock), ANNA, blob) is None
    assert db.run_sync(lambda s: vault.decrypt_json(s, ANNA, blob, AAD)) is None
    with pytest.raises(KeyDestroyed) as caught:
        encrypt(db, vault, ANNA, b"more")
    assert caught.value.status == 410
    assert "c-anna" not in str(caught.value)
    assert db.run_sync(lambda s: vault.is_destroyed(s, ANNA)) is True
    assert db.run_sync(lambda s: vault.is_destroyed(s, BRAM)) is False
    assert decrypt(db, vault, BRAM, bram_blob) == b"bram's"

    row = next(row for row in key_rows(db) if row.owner == ANNA)
    assert row.wrapped is None
    assert row.destroyed_at == clock.now()


def test_destroying_an_owner_without_a_key_still_bars_it(
    db: Database, vault: Vault, clock: ManualClock
) -> None:
    assert destroy(db, vault, ANNA, clock) is False
    assert db.run_sync(lambda s: vault.is_destroyed(s, ANNA)) is True
    with pytest.raises(KeyDestroyed):
        encrypt(db, vault, ANNA, b"new data under an erased id")
    (row,) = key_rows(db)
    assert row.wrapped is None


def test_destroy_and_encrypt_in_one_transaction(
    db: Database, vault: Vault, clock: ManualClock
) -> None:
    encrypt(db, vault, ANNA, b"cached now")

    def erase_then_write(session: Session) -> None:
        vault.destroy(session, ANNA, clock.now())
        vault.encrypt(session, ANNA, b"after", AAD)

    with pytest.raises(KeyDestroyed):
        db.run_sync(erase_then_write, write=True)


def test_destroy_invalidates_the_cache(
    db: Database, vault: Vault, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    unwraps = counting_unwraps(monkeypatch)
    blob = encrypt(db, vault, ANNA, b"secret")
    assert decrypt(db, vault, ANNA, blob) == b"secret"
    assert decrypt(db, vault, ANNA, blob) == b"secret"
    assert unwraps == [ANNA]  # created once, then served from the cache
    destroy(db, vault, ANNA, clock)
    assert decrypt(db, vault, ANNA, blob) is None


def test_a_destroy_that_rolls_back_leaves_the_key_readable(
    db: Database, vault: Vault, clock: ManualClock
) -> None:
    blob = encrypt(db, vault, ANNA, b"secret")

    def destroy_then_fail(session: Session) -> None:
        vault.destroy(session, ANNA, clock.now())
        raise RuntimeError("the erasure failed half-way")

    with pytest.raises(RuntimeError):
        db.run_sync(destroy_then_fail, write=True)
    assert decrypt(db, vault, ANNA, blob) == b"secret"
    assert decrypt(db, vault, ANNA, blob) == b"secret"


def test_a_lookup_racing_a_destroy_does_not_recache_the_key(
    db: Database, vault: Vault, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader loads the live key row, then the key is destroyed and committed before the
    reader unwraps it: the reader may finish its own operation, but the key is not cached."""
    blob = encrypt(db, Vault(MASTER_KEY, clock), ANNA, b"secret")
    real_read = vault_module._read
    raced: list[bool] = []

    def read_then_destroy(session: Session, owner: str) -> DataKeyRow | None:
        row = real_read(session, owner)
        if not raced:
            raced.append(True)
            destroy(db, vault, owner, clock)
        return row

    monkeypatch.setattr(vault_module, "_read", read_then_destroy)
    assert decrypt(db, vault, ANNA, blob) == b"secret"  # read before the destruction
    assert raced == [True]
    assert decrypt(db, vault, ANNA, blob) is None


def test_another_process_destroying_a_key_is_seen_after_forget_or_ttl(
    db: Database, clock: ManualClock
) -> None:
    """The documented cross-process caveat: another process's cache lives until it expires."""
    here = Vault(MASTER_KEY, clock, cache_ttl=timedelta(minutes=5))
    elsewhere = Vault(MASTER_KEY, clock)
    blob = encrypt(db, here, ANNA, b"secret")
    destroy(db, elsewhere, ANNA, clock)
    assert decrypt(db, here, ANNA, blob) == b"secret"  # still cached here
    here.forget(ANNA)
    assert decrypt(db, here, ANNA, blob) is None

    bram_blob = encrypt(db, here, BRAM, b"bram's")
    destroy(db, elsewhere, BRAM, clock)
    clock.advance(timedelta(minutes=4))
    assert decrypt(db, here, BRAM, bram_blob) == b"bram's"
    clock.advance(timedelta(minutes=2))
    assert decrypt(db, here, BRAM, bram_blob) is None


def test_the_cache_is_bounded(
    db: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = Vault(MASTER_KEY, clock, cache_size=2)
    owners = [customer_owner(f"c-{n}") for n in range(3)]
    blobs = {owner: encrypt(db, vault, owner, owner.encode()) for owner in owners}
    unwraps = counting_unwraps(monkeypatch)
    assert decrypt(db, vault, owners[2], blobs[owners[2]]) == owners[2].encode()
    assert decrypt(db, vault, owners[1], blobs[owners[1]]) == owners[1].encode()
    assert unwraps == []  # the two most recent are cached
    assert decrypt(db, vault, owners[0], blobs[owners[0]]) == owners[0].encode()
    assert unwraps == [owners[0]]  # the oldest was evicted
    assert decrypt(db, vault, owners[2], blobs[owners[2]]) == owners[2].encode()
    assert unwraps == [owners[0], owners[2]]  # and it evicted the least recently used

    vault.clear_cache()
    decrypt(db, vault, owners[1], blobs[owners[1]])
    assert unwraps[-1] == owners[1]


def test_owner_ids_are_bounded(db: Database, vault: Vault) -> None:
    with pytest.raises(ValueError, match="1 to 96"):
        encrypt(db, vault, "x" * 97, b"data")
    with pytest.raises(ValueError, match="1 to 96"):
        encrypt(db, vault, "", b"data")


def test_a_raw_scan_finds_no_clear_key(db: Database, vault: Vault) -> None:
    encrypt(db, vault, ANNA, b"secret")
    row = next(row for row in key_rows(db) if row.owner == ANNA)
    assert row.wrapped is not None
    dek = unwrap(derive_kek(MASTER_KEY), row.wrapped, ANNA)

    def raw(session: Session) -> list[Any]:
        return list(session.connection().execute(sa.text("SELECT * FROM data_key")).all())

    for stored in db.run_sync(raw):
        for value in stored:
            assert not (isinstance(value, bytes | memoryview) and dek in bytes(value))
