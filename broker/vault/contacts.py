"""A customer's contact data (name, address, e-mail, telephone), kept encrypted.

The contact is sealed under the customer's data key, with associated data
naming the ``customer_contact`` table and the customer id, so a ciphertext
copied to another customer's row does not open. Erasing the customer destroys
the key: the contact is gone even where a copy of the row survives.

Saving a contact also replaces the customer's entries in the identifier index
(keyed hashes of their login, name, street, e-mail and phone; see
:mod:`broker.protection.identifiers`), so free text is scrubbed of them in every
release, whoever the vehicle's holders are.

The fields are those of ``contracts/categories/customer.contact.schema.json``;
this module refuses other field names and non-string values, and leaves the
full schema check (formats, lengths) to the caller that received the data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlmodel import Session

from broker.clock import ensure_utc
from broker.errors import InvalidDocument, NotFound
from broker.protection.identifiers import customer_identifiers
from broker.store import identifier_index
from broker.store.tables import CustomerContactRow, CustomerRow
from broker.vault.envelope import DecryptionFailed, associated_data
from broker.vault.vault import Vault, customer_owner

#: The fields of a contact (the ``customer.contact`` category).
CONTACT_FIELDS: Final = frozenset(
    {"name", "street", "house_number", "postal_code", "city", "country", "email", "phone"}
)
_TABLE: Final = "customer_contact"


def contact_aad(customer_id: str) -> bytes:
    """The associated data binding a sealed contact to its customer."""
    return associated_data(_TABLE, customer_id)


def save_contact(
    session: Session, vault: Vault, customer_id: str, contact: dict[str, Any], at: datetime
) -> None:
    """Store (or replace) the customer's contact, sealed under their data key.

    Raises :class:`NotFound` for an unknown customer, :class:`InvalidDocument`
    for unknown fields or non-string values, and
    :class:`~broker.vault.vault.KeyDestroyed` once the customer was erased.
    """
    _check_contact(contact)
    customer = session.get(CustomerRow, customer_id)
    if customer is None:
        raise NotFound("no such customer")
    owner = customer_owner(customer_id)
    ciphertext = vault.encrypt_json(session, owner, contact, contact_aad(customer_id))
    at = ensure_utc(at)
    row = session.get(CustomerContactRow, customer_id)
    if row is None:
        row = CustomerContactRow(
            customer_id=customer_id, key_owner=owner, ciphertext=ciphertext, updated_at=at
        )
    else:
        row.key_owner = owner
        row.ciphertext = ciphertext
        row.updated_at = at
    session.add(row)
    session.flush()
    entries = vault.identifier_hasher.entries(customer_identifiers(customer.login, contact))
    identifier_index.replace(session, customer_id, entries)


def load_contact(session: Session, vault: Vault, customer_id: str) -> dict[str, Any] | None:
    """The customer's contact, or None if they have none or were erased."""
    row = session.get(CustomerContactRow, customer_id)
    if row is None:
        return None
    value = vault.decrypt_json(session, row.key_owner, row.ciphertext, contact_aad(customer_id))
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DecryptionFailed("a stored contact is not a JSON object")
    return value


def _check_contact(contact: dict[str, Any]) -> None:
    if not isinstance(contact, dict) or not contact:
        raise InvalidDocument("a contact is a non-empty JSON object")
    unknown = sorted(str(name) for name in contact if name not in CONTACT_FIELDS)
    if unknown:
        raise InvalidDocument(
            f"a contact has no field(s) {', '.join(unknown)}",
            errors=[{"path": f"$.{name}", "message": "unknown field"} for name in unknown],
        )
    not_text = sorted(name for name, value in contact.items() if not isinstance(value, str))
    if not_text:
        raise InvalidDocument(
            f"contact field(s) {', '.join(not_text)} must be strings",
            errors=[{"path": f"$.{name}", "message": "not a string"} for name in not_text],
        )
