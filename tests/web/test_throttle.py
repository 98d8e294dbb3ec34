"""broker.web.login's back-off per login name: the schedule and its store work."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from broker.clock import ManualClock
from broker.store.database import Database
from broker.store.tables import LoginThrottleRow
from broker.web.login import (
    FAILURE_MEMORY,
    MAX_FAILURES,
    clear_failures,
    forget_stale_failures,
    lock_period,
    reserve_attempt,
    throttle_key,
)


def test_the_lock_doubles_up_to_an_hour() -> None:
    assert [lock_period(n) for n in (1, 4)] == [timedelta(0), timedelta(0)]
    assert [lock_period(n).total_seconds() / 60 for n in range(5, 13)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
    ]
    assert lock_period(10_000) == timedelta(hours=1)


def test_the_throttle_key_is_a_hash_of_the_normalised_name() -> None:
    assert throttle_key("Anna ") == throttle_key("anna")
    assert throttle_key("anna") != throttle_key("bram")
    assert "anna" not in throttle_key("anna")
    assert len(throttle_key("anna")) == 64


def reserve(db: Database, clock: ManualClock, key: str) -> object:
    return db.run_sync(lambda s: reserve_attempt(s, key, clock.now()), write=True)


def rows(db: Database) -> list[LoginThrottleRow]:
    return list(db.run_sync(lambda s: s.exec(select(LoginThrottleRow)).all()))


def test_attempts_are_counted_before_the_check(db: Database, clock: ManualClock) -> None:
    key = throttle_key("anna")
    for _ in range(MAX_FAILURES):
        assert reserve(db, clock, key) is None
    assert reserve(db, clock, key) == clock.now() + timedelta(minutes=1)
    (row,) = rows(db)
    assert row.failures == MAX_FAILURES  # a refused attempt is not counted

    db.run_sync(lambda s: clear_failures(s, key), write=True)
    assert rows(db) == []


def test_failures_are_forgotten_after_a_quiet_day(db: Database, clock: ManualClock) -> None:
    key = throttle_key("anna")
    for _ in range(MAX_FAILURES - 1):
        reserve(db, clock, key)
    clock.advance(FAILURE_MEMORY)
    assert reserve(db, clock, key) is None
    (row,) = rows(db)
    assert row.failures == 1
    assert row.locked_until is None


def test_stale_counts_are_purged(db: Database, clock: ManualClock) -> None:
    for _ in range(MAX_FAILURES):
        reserve(db, clock, throttle_key("locked"))
    reserve(db, clock, throttle_key("stale"))
    clock.advance(FAILURE_MEMORY - timedelta(minutes=1))
    reserve(db, clock, throttle_key("recent"))
    clock.advance(timedelta(minutes=1))

    purged = db.run_sync(lambda s: forget_stale_failures(s, clock.now()), write=True)
    assert purged == 2  # "locked" (its lock is over) and "stale"
    assert [row.key_hash for row in rows(db)] == [throttle_key("recent")]
