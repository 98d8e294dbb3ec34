"""Erasing a customer by crypto-shredding, on SQLite and PostgreSQL: their key, contact and
login go; their encrypted records become unreadable; grants and the audit log stay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from broker.audit.entry import AuditEntry
from broker.clock import ManualClock
from broker.credentials import verify_password
from broker.errors import NotFound
from broker.services.erasure import (
    ERASED_LOGIN_PREFIX,
    ERASED_PASSWORD_HASH,
    ErasureReport,
    erase_customer,
)
from broker.store import audit as audit_store
from broker.store.database import Database
from broker.store.tables import (
    ContractRow,
    CustomerContactRow,
    CustomerRow,
    DataKeyRow,
    GrantEventRow,
    GrantRow,
    QuarantineRow,
    RecipientRow,
    TelemetryRecordRow,
    VehicleRow,
    metadata,
)
from broker.vault.contacts import load_contact, save_contact
from broker.vault.envelope import associated_data, derive_kek, unwrap
from broker.vault.vault import KeyDestroyed, Vault, customer_owner

MASTER_KEY = bytes(range(32))  # the vault fixture's
VIN = "WMWXR31002TA10001"
ANNA = customer_owner("c-anna")
ANNA_EMAIL = "anna.de.vries@example.test"
POSITION = {"latitude": 52.370216, "longitude": 4.895167}


def record_aad(record_id: str) -> bytes:
    return associated_data("telemetry_record", record_id)


@pytest.fixture
def anna(
    db: Database, vault: Vault, clock: ManualClock, add_customer: Callable[[str], str]
) -> dict[str, bytes]:
    """Anna, with a contact, a position record, a quarantined input, a grant and an audit entry;
    Bram, with a contact of his own. Returns Anna's sealed blobs by name."""
    add_customer("c-anna")
    add_customer("c-bram")
    now = clock.now()

    def build(session: Session) -> dict[str, bytes]:
        save_contact(session, vault, "c-anna", {"name": "Anna", "email": ANNA_EMAIL}, now)
        save_contact(session, vault, "c-bram", {"email": "bram@example.test"}, now)
        position = vault.encrypt_json(session, ANNA, POSITION, record_aad("r-1"))
        quarantined = vault.encrypt(session, ANNA, b'{"latitude": "north"}', b"quarantine")
        session.add(VehicleRow(vin=VIN, created_at=now))
        session.add(
            RecipientRow(
                id="rcp-insurer",
                name="Insurer",
                kind="insurer",
                legal_entity="Insurer B.V.",
                role="controller",
                headquarters_country="NL",
                processing_countries=["NL"],
                storage_countries=["NL"],
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        session.add(
            ContractRow(
                id="c-consent",
                version=1,
                recipient_id="rcp-insurer",
                document={},
                digest="0" * 64,
                loaded_at=now,
            )
        )
        session.add(
            TelemetryRecordRow(
                id="r-1",
                vin=VIN,
                category="vehicle.position",
                recorded_at=now,
                received_at=now,
                data={},
                key_owner=ANNA,
                ciphertext=position,
            )
        )
        session.add(
            QuarantineRow(
                received_at=now,
                source="http",
                reason_code="invalid",
                reason="latitude is not a number",
                key_owner=ANNA,
                ciphertext=quarantined,
            )
        )
        session.flush()
        session.add(
            GrantRow(
                id="gr-1",
                contract_id="c-consent",
                contract_version=1,
                recipient_id="rcp-insurer",
                vin=VIN,
                customer_id="c-anna",
                activation="consent",
                categories=["vehicle.position"],
                state="active",
                valid_from=now,
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        session.add(
            GrantEventRow(
                grant_id="gr-1", seq=0, at=now, action="approve", to_state="active", reason="ok"
            )
        )
        audit_store.append(session, [AuditEntry(at=now, kind="grant_event", subject_ref="gr-1")])
        return {"position": position, "quarantined": quarantined}

    return db.run_sync(build, write=True)


def erase(db: Database, vault: Vault, customer_id: str, clock: ManualClock) -> ErasureReport:
    return db.run_sync(lambda s: erase_customer(s, vault, customer_id, clock.now()), write=True)


def anna_key(db: Database) -> bytes:
    row = db.run_sync(lambda s: s.get(DataKeyRow, ANNA))
    assert row is not None and row.wrapped is not None
    return unwrap(derive_kek(MASTER_KEY), row.wrapped, ANNA)


def raw_rows(db: Database, table: str) -> list[tuple[Any, ...]]:
    def scan(session: Session) -> list[tuple[Any, ...]]:
        rows = session.connection().execute(sa.text(f'SELECT * FROM "{table}"')).all()
        return [tuple(row) for row in rows]

    return db.run_sync(scan)


def contains(rows: list[tuple[Any, ...]], needle: bytes) -> bool:
    for row in rows:
        for value in row:
            if isinstance(value, bytes | bytearray | memoryview) and needle in bytes(value):
                return True
            if value is not None and needle in str(value).encode():
                return True
    return False


def test_erasure_shreds_the_customers_data(
    db: Database, vault: Vault, clock: ManualClock, anna: dict[str, bytes]
) -> None:
    before = db.run_sync(lambda s: load_contact(s, vault, "c-anna"))
    assert before is not None
    assert before["email"] == ANNA_EMAIL
    clock.advance(timedelta(days=1))
    report = erase(db, vault, "c-anna", clock)
    assert report == ErasureReport(
        customer_id="c-anna",
        data_keys_destroyed=1,
        contacts_deleted=1,
        accounts_disabled=1,
        records_shredded=1,
        quarantined_shredded=1,
    )

    def readable(session: Session, reader: Vault) -> list[Any]:
        return [
            load_contact(session, reader, "c-anna"),
            reader.decrypt_json(session, ANNA, anna["position"], record_aad("r-1")),
            reader.decrypt(session, ANNA, anna["quarantined"], b"quarantine"),
        ]

    for reader in (vault, Vault(MASTER_KEY, clock)):  # the erasing vault, and a fresh one
        assert db.run_sync(lambda s: readable(s, reader)) == [None, None, None]  # noqa: B023
    bram = db.run_sync(lambda s: load_contact(s, vault, "c-bram"))
    assert bram == {"email": "bram@example.test"}


def test_after_erasure_a_raw_scan_finds_no_key_or_clear_email(
    db: Database, vault: Vault, clock: ManualClock, anna: dict[str, bytes]
) -> None:
    dek = anna_key(db)
    assert contains(raw_rows(db, "customer_contact"), b"c-anna")  # the scan sees rows
    assert contains(raw_rows(db, "customer"), b"c-anna@example.test")
    erase(db, vault, "c-anna", clock)

    data_keys = raw_rows(db, "data_key")
    assert not contains(data_keys, dek)
    (key,) = [
        row for row in db.run_sync(lambda s: s.exec(select(DataKeyRow)).all()) if row.owner == ANNA
    ]
    assert key.wrapped is None
    assert key.destroyed_at == clock.now()
    contacts = raw_rows(db, "customer_contact")
    assert len(contacts) == 1  # Bram's
    assert not contains(contacts, b"c-anna")
    assert not contains(raw_rows(db, "customer"), b"c-anna@example.test")
    for table in metadata.sorted_tables:
        assert not contains(raw_rows(db, table.name), ANNA_EMAIL.encode()), table.name
        assert not contains(raw_rows(db, table.name), dek), table.name


def test_erasure_disables_the_login(
    db: Database, vault: Vault, clock: ManualClock, anna: dict[str, bytes]
) -> None:
    erase(db, vault, "c-anna", clock)
    customer = db.run_sync(lambda s: s.get(CustomerRow, "c-anna"))
    assert customer is not None
    assert customer.login.startswith(ERASED_LOGIN_PREFIX)
    assert "anna" not in customer.login
    assert customer.password_hash == ERASED_PASSWORD_HASH
    assert not verify_password(customer.password_hash, "secret-c-anna")
    assert not verify_password(customer.password_hash, "")
    bram = db.run_sync(lambda s: s.get(CustomerRow, "c-bram"))
    assert bram is not None
    assert verify_password(bram.password_hash, "secret-c-bram")


def test_erasure_keeps_grants_and_the_audit_log(
    db: Database, vault: Vault, clock: ManualClock, anna: dict[str, bytes]
) -> None:
    audit_before = raw_rows(db, "audit_entry")
    erase(db, vault, "c-anna", clock)
    assert raw_rows(db, "audit_entry") == audit_before
    assert db.run_sync(lambda s: audit_store.verify(s, None)).ok
    grant = db.run_sync(lambda s: s.get(GrantRow, "gr-1"))
    assert grant is not None
    assert grant.customer_id == "c-anna"
    assert len(raw_rows(db, "grant_event")) == 1


def test_erasure_is_idempotent_and_bars_new_data(
    db: Database, vault: Vault, clock: ManualClock, anna: dict[str, bytes]
) -> None:
    erase(db, vault, "c-anna", clock)
    login = db.run_sync(lambda s: s.get(CustomerRow, "c-anna")).login  # type: ignore[union-attr]
    again = erase(db, vault, "c-anna", clock)
    assert (again.data_keys_destroyed, again.contacts_deleted, again.accounts_disabled) == (0, 0, 0)
    assert db.run_sync(lambda s: s.get(CustomerRow, "c-anna")).login == login  # type: ignore[union-attr]
    with pytest.raises(KeyDestroyed):
        db.run_sync(
            lambda s: save_contact(s, vault, "c-anna", {"email": ANNA_EMAIL}, clock.now()),
            write=True,
        )
    with pytest.raises(KeyDestroyed):
        db.run_sync(lambda s: vault.encrypt(s, ANNA, b"new position", b"r-2"), write=True)
    assert db.run_sync(lambda s: s.get(CustomerContactRow, "c-anna")) is None


def test_a_customer_without_a_key_is_erased_and_barred(
    db: Database, vault: Vault, clock: ManualClock, add_customer: Callable[[str], str]
) -> None:
    add_customer("c-carla")
    report = erase(db, vault, "c-carla", clock)
    assert (report.data_keys_destroyed, report.contacts_deleted, report.accounts_disabled) == (
        0,
        0,
        1,
    )
    with pytest.raises(KeyDestroyed):
        db.run_sync(lambda s: vault.encrypt(s, customer_owner("c-carla"), b"x", b"aad"), write=True)


def test_erasing_an_unknown_customer_is_refused(
    db: Database, vault: Vault, clock: ManualClock
) -> None:
    with pytest.raises(NotFound):
        erase(db, vault, "c-nobody", clock)
