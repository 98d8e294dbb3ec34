"""The customer identifier index in the store: keyed hashes only (see
:mod:`broker.protection.identifiers`), replaced per customer, read whole by its version."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlmodel import Session, col, select

from broker.protection.identifiers import IndexEntry
from broker.store.tables import CustomerIdentifierRow

#: The index's version: (row count, largest id). Any write changes it (ids are never
#: reused: a PostgreSQL sequence, SQLite AUTOINCREMENT).
IndexVersion = tuple[int, int]


def replace(session: Session, customer_id: str, entries: Iterable[IndexEntry]) -> None:
    """The customer's entries become ``entries`` (untouched when they already are)."""
    wanted = set(entries)
    rows = session.exec(
        select(CustomerIdentifierRow.digest, CustomerIdentifierRow.words).where(
            col(CustomerIdentifierRow.customer_id) == customer_id
        )
    ).all()
    if {IndexEntry(digest, words) for digest, words in rows} == wanted:
        return
    drop(session, customer_id)
    for entry in sorted(wanted, key=lambda e: e.digest):
        session.add(
            CustomerIdentifierRow(customer_id=customer_id, digest=entry.digest, words=entry.words)
        )
    session.flush()


def drop(session: Session, customer_id: str) -> int:
    """Delete the customer's entries; how many there were."""
    statement = sa.delete(CustomerIdentifierRow).where(
        col(CustomerIdentifierRow.customer_id) == customer_id
    )
    return int(session.exec(statement).rowcount)


def version(session: Session) -> IndexVersion:
    count, largest = session.exec(
        select(sa.func.count(col(CustomerIdentifierRow.id)), sa.func.max(CustomerIdentifierRow.id))
    ).one()
    return int(count), int(largest or 0)


def entries(session: Session) -> list[IndexEntry]:
    """Every entry (digests and word counts: no customer ids)."""
    rows = session.exec(select(CustomerIdentifierRow.digest, CustomerIdentifierRow.words)).all()
    return [IndexEntry(digest, words) for digest, words in rows]
