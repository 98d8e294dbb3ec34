"""Every customer's identifiers as keyed hashes: written with the contact, dropped on erasure."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlmodel import select

from broker.clock import ManualClock
from broker.protection.identifiers import index_form
from broker.services.erasure import erase_customer
from broker.store import identifier_index
from broker.store.database import Database
from broker.store.tables import CustomerIdentifierRow
from broker.vault.contacts import save_contact
from broker.vault.vault import Vault

CONTACT = {"name": "Anna de Vries", "street": "Keizersgracht 12", "city": "Amsterdam",
           "email": "anna@example.test", "phone": "+31201234567"}  # fmt: skip


def digests(db: Database, customer_id: str) -> set[str]:
    statement = select(CustomerIdentifierRow.digest).where(
        CustomerIdentifierRow.customer_id == customer_id
    )
    return set(db.run_sync(lambda s: s.exec(statement).all()))


def test_saving_a_contact_indexes_its_identifiers_by_keyed_hash_only(
    db: Database, vault: Vault, clock: ManualClock, add_customer: Callable[[str], str]
) -> None:
    add_customer("c-anna")
    db.run_sync(lambda s: save_contact(s, vault, "c-anna", CONTACT, clock.now()), write=True)
    hasher = vault.identifier_hasher
    expected = {
        "c-anna@example.test",
        "Anna de Vries",
        "Keizersgracht 12",
        "anna@example.test",
        "+31201234567",
    }  # fmt: skip  (the login, then what names one person)
    assert digests(db, "c-anna") == {hasher.digest(index_form(v)) for v in expected}
    with db.engine.connect() as conn:
        dump = repr(conn.execute(sa.text("SELECT * FROM customer_identifier")).all()).casefold()
    for value in [*CONTACT.values(), "c-anna@example.test"]:
        assert index_form(value) not in dump and value.casefold() not in dump
    before = db.run_sync(identifier_index.version)
    changed = {**CONTACT, "name": "Anna Smit"}
    db.run_sync(lambda s: save_contact(s, vault, "c-anna", changed, clock.now()), write=True)
    assert hasher.digest("anna smit") in digests(db, "c-anna")
    assert hasher.digest("anna de vries") not in digests(db, "c-anna")
    assert db.run_sync(identifier_index.version) != before


def test_erasure_drops_the_customers_entries_only(
    db: Database, vault: Vault, clock: ManualClock, add_customer: Callable[[str], str]
) -> None:
    for customer in ("c-anna", "c-bram"):
        add_customer(customer)
        contact = {**CONTACT, "name": f"Name of {customer}"}
        db.run_sync(lambda s, c=customer, d=contact: save_contact(s, vault, c, d, clock.now()),
                    write=True)  # fmt: skip
    before = db.run_sync(identifier_index.version)
    db.run_sync(lambda s: erase_customer(s, vault, "c-anna", clock.now()), write=True)
    assert digests(db, "c-anna") == set()
    assert digests(db, "c-bram")
    assert db.run_sync(identifier_index.version) != before
