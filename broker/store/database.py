"""The database runner: engines, sessions, and running work off the event loop.

Database access never blocks the event loop: every unit of work is a plain
function taking a :class:`Session`, run in a thread by :meth:`Database.read` or
:meth:`Database.write`. On SQLite all writes go through one writer thread and
open with ``BEGIN IMMEDIATE`` (one writer, no "database is locked" on
read-then-write); WAL mode and a busy timeout let readers and other processes
share the file.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlmodel import Session

from broker.errors import ConfigurationError, DatabaseError

T = TypeVar("T")

_SQLITE_BUSY_TIMEOUT_MS = 15_000


def normalise_url(url: str) -> URL:
    """Turn a plain ``sqlite:///PATH`` or ``postgresql://...`` URL into a driver URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"BROKER_DATABASE_URL is not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        database = parsed.database or ""
        if database in {"", ":memory:"} or database.startswith("file:"):
            raise ConfigurationError(
                "SQLite needs a file path, e.g. sqlite:///var/broker.sqlite3 "
                "(an in-memory database cannot be shared between threads)"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    raise ConfigurationError(
        f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://..."
    )


def describe_url(url: URL) -> str:
    """The URL without its password, for messages and logs."""
    return url.render_as_string(hide_password=True)


class Database:
    """One database, its engine, and the threads that talk to it."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = normalise_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            path = Path(self.url.database or "")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 15},
                pool_size=pool_size,
                max_overflow=pool_size,
            )
            _install_sqlite_pragmas(self.engine)
            writers = 1
        else:
            self.engine = sa.create_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            writers = pool_size
        self._write_engine = self.engine.execution_options(broker_write=True)
        self._writer = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="db-write")
        self._reader = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="db-read")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def describe(self) -> str:
        return describe_url(self.url)

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in one transaction; a write session commits on success."""
        bind: Engine = self._write_engine if write else self.engine
        with Session(bind, expire_on_commit=False, autoflush=True) as session:
            try:
                yield session
                if write:
                    session.commit()
                # A read session ends by closing: its transaction is rolled back, and
                # the objects it loaded stay readable (detached, not expired).
            except SAOperationalError as exc:
                session.rollback()
                raise DatabaseError(f"database unavailable: {exc.orig!s}") from exc
            except BaseException:
                session.rollback()
                raise

    def run_sync(self, work: Callable[[Session], T], *, write: bool = False) -> T:
        with self.session(write=write) as session:
            return work(session)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a read transaction, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._reader, functools.partial(self.run_sync, work, write=False)
        )

    async def write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a write transaction, off the event loop; commits on success."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._writer, functools.partial(self.run_sync, work, write=True)
        )

    async def ping(self) -> None:
        """Raise :class:`DatabaseError` unless the database answers."""
        await self.read(lambda s: s.execute(sa.text("SELECT 1")).scalar_one())

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self.engine.dispose()


def _install_sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves, so that writers can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Deleted content (destroyed keys, purged records) is overwritten, not left in free pages.
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get("broker_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
