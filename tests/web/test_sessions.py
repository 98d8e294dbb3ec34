"""broker.web.sessions: safe redirect targets, and session store work on both databases."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlmodel import select

from broker.clock import ManualClock
from broker.credentials import hash_password
from broker.store.database import Database
from broker.store.tables import CustomerRow, CustomerSessionRow
from broker.web.sessions import (
    ABSOLUTE_LIFETIME,
    IDLE_TIMEOUT,
    create_session,
    end_session,
    login_url,
    purge_expired_sessions,
    resume_session,
    safe_next,
)


@pytest.mark.parametrize(
    "target",
    ["/", "/consent?request=abc", "/grants/42#top", "/a/b%2Fc", "/?next=https://x.example"],
)
def test_local_paths_are_kept(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "https://evil.example/",
        "HTTP://evil.example",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\\/evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/\tevil",
        "/ evil",
        "/\nLocation: x",
        "/\x00",
        "/" + "a" * 3000,
    ],
)
def test_anything_else_becomes_the_start_page(target: str | None) -> None:
    assert safe_next(target) == "/"


def test_login_url() -> None:
    assert login_url("/") == "/login"
    assert login_url("//evil.example") == "/login"
    assert login_url("/consent?x=1&y=2") == "/login?next=/consent?x%3D1%26y%3D2"


@pytest.fixture
def customer(db: Database, clock: ManualClock) -> str:
    row = CustomerRow(
        id="cus-test", login="test", password_hash=hash_password("pw"), created_at=clock.now()
    )
    db.run_sync(lambda s: s.add(row), write=True)
    return row.id


def test_a_session_stores_only_the_hash(db: Database, clock: ManualClock, customer: str) -> None:
    value, session = db.run_sync(lambda s: create_session(s, customer, clock.now()), write=True)
    rows = db.run_sync(lambda s: s.exec(select(CustomerSessionRow)).all())
    assert [row.id_hash for row in rows] == [hashlib.sha256(value.encode()).hexdigest()]
    assert value not in {rows[0].id_hash, rows[0].csrf_token}
    assert session.customer.login == "test"
    assert rows[0].expires_at == clock.now() + ABSOLUTE_LIFETIME


def test_resume_and_expire(db: Database, clock: ManualClock, customer: str) -> None:
    _, session = db.run_sync(lambda s: create_session(s, customer, clock.now()), write=True)

    def resume() -> object:
        return db.run_sync(lambda s: resume_session(s, session.id_hash, clock.now()), write=True)

    clock.advance(IDLE_TIMEOUT - timedelta(seconds=1))
    assert resume() == session
    clock.advance(IDLE_TIMEOUT - timedelta(seconds=1))
    assert resume() == session
    clock.advance(IDLE_TIMEOUT)
    assert resume() is None
    assert db.run_sync(lambda s: s.exec(select(CustomerSessionRow)).all()) == []


def test_end_and_purge(db: Database, clock: ManualClock, customer: str) -> None:
    start = clock.now()
    _, ended = db.run_sync(lambda s: create_session(s, customer, start), write=True)
    _, idle = db.run_sync(lambda s: create_session(s, customer, start), write=True)
    db.run_sync(lambda s: end_session(s, ended.id_hash), write=True)
    clock.advance(timedelta(minutes=10))
    _, live = db.run_sync(lambda s: create_session(s, customer, clock.now()), write=True)
    clock.advance(IDLE_TIMEOUT - timedelta(minutes=5))

    purged = db.run_sync(lambda s: purge_expired_sessions(s, clock.now()), write=True)
    assert purged == 1
    left = db.run_sync(lambda s: s.exec(select(CustomerSessionRow)).all())
    assert [row.id_hash for row in left] == [live.id_hash]
    assert idle.id_hash != live.id_hash
