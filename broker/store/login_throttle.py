"""Failed-login counts in the store (keyed by a hash of the login name, never the name)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from broker.store.tables import CustomerRow, LoginThrottleRow


def reserve_attempt(
    db: Session,
    key: str,
    now: datetime,
    *,
    lock_period: Callable[[int], timedelta],
    max_failures: int,
    memory: timedelta,
) -> datetime | None:
    """Count an attempt before its password is checked: the end of the lock if the name is
    locked (the attempt is not counted then), else None."""
    _insert_if_missing(db, key, now)
    row = db.exec(
        select(LoginThrottleRow).where(LoginThrottleRow.key_hash == key).with_for_update()
    ).one()
    if row.locked_until is not None and now < row.locked_until:
        return row.locked_until
    if now - row.last_failure_at >= memory:
        row.failures = 0
    row.failures += 1
    row.last_failure_at = now
    row.locked_until = now + lock_period(row.failures) if row.failures >= max_failures else None
    db.add(row)
    return None


def clear_failures(db: Session, key: str) -> None:
    db.execute(sa.delete(LoginThrottleRow).where(col(LoginThrottleRow.key_hash) == key))


def forget_stale_failures(db: Session, now: datetime, *, memory: timedelta) -> int:
    """Delete counts with no failure within ``memory`` and no lock running."""
    result = db.execute(
        sa.delete(LoginThrottleRow).where(
            col(LoginThrottleRow.last_failure_at) <= now - memory,
            sa.or_(
                col(LoginThrottleRow.locked_until).is_(None),
                col(LoginThrottleRow.locked_until) <= now,
            ),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _insert_if_missing(db: Session, key: str, now: datetime) -> None:
    values = {"key_hash": key, "failures": 0, "last_failure_at": now, "locked_until": None}
    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement: Any = insert(LoginThrottleRow).values(**values).on_conflict_do_nothing()
    db.execute(statement)


def find_customer(db: Session, login: str, *, max_length: int) -> CustomerRow | None:
    if not login or len(login) > max_length:
        return None
    return db.exec(select(CustomerRow).where(CustomerRow.login == login)).first()
