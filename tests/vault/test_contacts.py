"""Customer contact data, encrypted under the customer's key, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session

from broker.clock import ManualClock
from broker.errors import InvalidDocument, NotFound
from broker.store.database import Database
from broker.store.tables import CustomerContactRow
from broker.vault.contacts import load_contact, save_contact
from broker.vault.envelope import DecryptionFailed
from broker.vault.vault import KeyDestroyed, Vault, customer_owner

ANNA_CONTACT: dict[str, Any] = {
    "name": "Anna de Vries",
    "street": "Keizersgracht",
    "house_number": "12A",
    "postal_code": "1015 CJ",
    "city": "Amsterdam",
    "country": "NL",
    "email": "anna@example.test",
    "phone": "+31201234567",
}


def save(db: Database, vault: Vault, customer_id: str, contact: dict[str, Any], at: Any) -> None:
    db.run_sync(lambda s: save_contact(s, vault, customer_id, contact, at), write=True)


def load(db: Database, vault: Vault, customer_id: str) -> dict[str, Any] | None:
    return db.run_sync(lambda s: load_contact(s, vault, customer_id))


def stored(db: Database, customer_id: str) -> CustomerContactRow | None:
    return db.run_sync(lambda s: s.get(CustomerContactRow, customer_id))


def test_round_trip_stores_no_clear_text(
    db: Database, vault: Vault, clock: ManualClock, add_customer: Callable[[str], str]
) -> None:
    add_customer("c-anna")
    save(db, vault, "c-anna", ANNA_CONTACT, clock.now())
    assert load(db, Vault(bytes(range(32)), clock), "c-anna") == ANNA_CONTACT

    row = stored(db, "c-anna")
    assert row is not None
    assert row.key_owner == customer_owner("c-anna")
    assert row.updated_at == clock.now()
    for value in ANNA_CONTACT.values():
        assert value.encode() not in row.ciphertext


def test_saving_again_replaces_the_contact(
    db: Database, vault: Vault, clock: ManualClock, add_customer: Callable[[str], str]
) -> None:
    add_customer("c-anna")
    save(db, vault, "c-anna", ANNA_CONTACT, clock.now())
    clock.advance(timedelta(days=1))
    moved = {**ANNA_CONTACT, "city": "Utrecht", "postal_code": "3511 AA"}
    save(db, vault, "c-anna", moved, clock.now())
    assert load(db, vault, "c-anna") == moved
    row = stored(db, "c-anna")
    assert row is not None
    assert row.updated_at == clock.now()


def test_no_contact_reads_as_none(
    db: Database, vault: Vault, add_customer: Callable[[str], str]
) -> None:
    add_customer("c-anna")
    assert load(db, vault, "c-anna") is None
    assert load(db, vault, "c-nobody") is None


def test_unknown_customer_is_refused(db: Database, vault: Vault, clock: ManualClock) -> None:
    with pytest.raises(NotFound):
        save(db, vault, "c-nobody", ANNA_CONTACT, clock.now())


@pytest.mark.parametrize(
    ("contact", "message"),
    [
        ({}, "non-empty"),
        ({"email": "anna@example.test", "shoe_size": "38"}, "shoe_size"),
        ({"email": "anna@example.test", "phone": 31201234567}, "phone"),
    ],
)
def test_malformed_contacts_are_refused(
    db: Database,
    vault: Vault,
    clock: ManualClock,
    add_customer: Callable[[str], str],
    contact: dict[str, Any],
    message: str,
) -> None:
    add_customer("c-anna")
    with pytest.raises(InvalidDocument, match=message) as caught:
        save(db, vault, "c-anna", contact, clock.now())
    assert "anna@example.test" not in str(caught.value)
    assert stored(db, "c-anna") is None


def test_a_contact_copied_to_another_customer_does_not_open(
    db: Database, vault: Vault, clock: ManualClock, add_customer: Callable[[str], str]
) -> None:
    """The associated data binds the ciphertext to its customer, even under the same key."""
    add_customer("c-anna")
    add_customer("c-bram")
    save(db, vault, "c-anna", ANNA_CONTACT, clock.now())
    save(db, vault, "c-bram", {"name": "Bram"}, clock.now())

    def copy_anna_to_bram(session: Session) -> None:
        anna = session.get(CustomerContactRow, "c-anna")
        bram = session.get(CustomerContactRow, "c-bram")
        assert anna is not None and bram is not None
        bram.key_owner = anna.key_owner
        bram.ciphertext = anna.ciphertext
        session.add(bram)

    db.run_sync(copy_anna_to_bram, write=True)
    with pytest.raises(DecryptionFailed):
        load(db, vault, "c-bram")


def test_a_shredded_contact_reads_as_none_and_cannot_be_saved(
    db: Database, vault: Vault, clock: ManualClock, add_customer: Callable[[str], str]
) -> None:
    add_customer("c-anna")
    save(db, vault, "c-anna", ANNA_CONTACT, clock.now())
    db.run_sync(lambda s: vault.destroy(s, customer_owner("c-anna"), clock.now()), write=True)
    assert load(db, vault, "c-anna") is None
    with pytest.raises(KeyDestroyed):
        save(db, vault, "c-anna", ANNA_CONTACT, clock.now())
