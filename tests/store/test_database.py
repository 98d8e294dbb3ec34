"""The database runner: URLs, UTC-aware times, and work run off the event loop."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from broker.errors import ConfigurationError
from broker.store.database import Database, normalise_url
from broker.store.tables import CustomerRow


def test_plain_urls_get_their_driver() -> None:
    assert normalise_url("sqlite:///var/x.sqlite3").drivername == "sqlite+pysqlite"
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "mysql://u@h/db", "not a url at all"]
)
def test_unusable_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(ConfigurationError):
        normalise_url(url)


def _customer(at: datetime) -> CustomerRow:
    return CustomerRow(id="cus-1", login="one", password_hash="x", language="en", created_at=at)


def test_times_come_back_utc_aware(db: Database) -> None:
    amsterdam = timezone(timedelta(hours=1))
    written = datetime(2026, 3, 2, 9, 30, tzinfo=amsterdam)
    db.run_sync(lambda s: s.add(_customer(written)), write=True)
    read = db.run_sync(lambda s: s.get(CustomerRow, "cus-1"))
    assert read is not None
    assert read.created_at.tzinfo is not None
    assert read.created_at == written
    assert read.created_at.utcoffset() == timedelta(0)


def test_naive_times_are_refused(db: Database) -> None:
    naive = datetime(2026, 3, 2, 9, 30)  # noqa: DTZ001 - the point of the test
    with pytest.raises(sa.exc.StatementError, match="naive"):
        db.run_sync(lambda s: s.add(_customer(naive)), write=True)


async def test_work_runs_off_the_event_loop(db: Database) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def work(session: Session) -> int:
        seen.append(threading.get_ident())
        return int(session.execute(sa.text("SELECT 41 + 1")).scalar_one())

    assert await db.read(work) == 42
    assert await db.write(work) == 42
    assert seen and all(t != loop_thread for t in seen)


async def test_concurrent_writers_do_not_lose_updates(db: Database) -> None:
    now = datetime(2026, 3, 2, tzinfo=UTC)
    db.run_sync(lambda s: s.add(_customer(now)), write=True)

    def bump(session: Session) -> None:
        row = session.get(CustomerRow, "cus-1")
        assert row is not None
        row.password_hash = str(int(row.password_hash) + 1) if row.password_hash.isdigit() else "1"
        session.add(row)

    if db.is_sqlite:
        await asyncio.gather(*(db.write(bump) for _ in range(50)))
        row = db.run_sync(lambda s: s.get(CustomerRow, "cus-1"))
        assert row is not None and row.password_hash == "50"
    else:
        # PostgreSQL writers run in parallel: read-then-write needs a row lock.
        def locked_bump(session: Session) -> None:
            session.execute(
                sa.select(CustomerRow).where(CustomerRow.id == "cus-1").with_for_update()
            )
            bump(session)

        await asyncio.gather(*(db.write(locked_bump) for _ in range(50)))
        row = db.run_sync(lambda s: s.get(CustomerRow, "cus-1"))
        assert row is not None and row.password_hash == "50"


async def test_readiness_ping(db: Database) -> None:
    await db.ping()
