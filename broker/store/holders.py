"""The holder changes applied so far, by their idempotency key (table ``holder_change``).

A change is stored in the transaction that applies it, so either both commit or
neither does; what is kept is the change's kind, a keyed digest of its body and
the answer given, never the VIN or the customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.store.tables import HolderChangeRow


@dataclass(frozen=True)
class StoredChange:
    change_id: str
    digest: str
    kind: str
    applied_at: datetime
    result: dict[str, Any]


def find(session: Session, change_id: str) -> StoredChange | None:
    """The change applied under ``change_id``, if any."""
    row = session.get(HolderChangeRow, change_id)
    if row is None:
        return None
    return StoredChange(row.change_id, row.digest, row.kind, row.applied_at, dict(row.result))


def add(
    session: Session,
    *,
    change_id: str,
    digest: str,
    kind: str,
    applied_at: datetime,
    result: dict[str, Any],
) -> None:
    """Remember a change just applied in this transaction."""
    session.add(
        HolderChangeRow(
            change_id=change_id, digest=digest, kind=kind, applied_at=applied_at, result=result
        )
    )
    session.flush()
