"""Shared fixtures: a migrated database on SQLite and on PostgreSQL, and a manual clock.

Every test that takes ``db`` runs twice, once per backend. PostgreSQL is at
``BROKER_TEST_POSTGRES_URL`` (default: the local server); each test run gets a
database of its own, dropped at the end. When the server is unreachable the
PostgreSQL half is skipped with the reason shown, except under ``CI=true``,
where it fails: CI must never pass on a silently skipped backend.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from broker.clock import ManualClock
from broker.store.database import Database
from broker.store.migrate import head_revision, upgrade
from broker.store.tables import metadata

POSTGRES_ADMIN_URL = os.environ.get(
    "BROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
POSTGRES_WANTED = os.environ.get("BROKER_TEST_POSTGRES", "1") != "0"
IN_CI = os.environ.get("CI", "").lower() == "true"

#: A fixed start for the manual clock: tests move time from here.
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run, so this fails)")
    pytest.skip(reason)


def _admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    if not POSTGRES_WANTED:
        _unavailable("PostgreSQL tests disabled by BROKER_TEST_POSTGRES=0")
    try:
        with _admin_connect():
            pass
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc}")
    return POSTGRES_ADMIN_URL


def create_postgres_database(prefix: str = "broker_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)


def drop_postgres_database(url: str) -> None:
    name = sa.make_url(url).database
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_migrated_url(postgres_admin: str) -> Iterator[str]:
    url = create_postgres_database()
    database = Database(url)
    upgrade(database)
    database.close()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "broker.sqlite3"
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    with database.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    database.close()
    return path


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of the current backend."""
    if backend == "sqlite":
        path = tmp_path / "broker.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_migrated_url")
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        # A test may have stamped another revision (a "newer broker" test): restore it.
        conn.execute("UPDATE alembic_version SET version_num = %s", (head_revision(),))
    return url


@pytest.fixture
def empty_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A database with no schema at all, of the current backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    request.getfixturevalue("postgres_admin")
    url = create_postgres_database("broker_fresh")
    yield url
    drop_postgres_database(url)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)
