"""Schema migrations (Alembic) for SQLite and PostgreSQL alike.

``upgrade`` brings a database to the newest revision this broker knows. A
database stamped with a revision this broker does not know was written by a
newer broker: it is refused with a clear message, never touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from broker.errors import DatabaseError, DatabaseTooNew
from broker.store.database import Database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_known(database: Database) -> str | None:
    """The database's revision; raises :class:`DatabaseTooNew` if this broker does not know it."""
    revision = current_revision(database)
    if revision is None:
        return None
    scripts = ScriptDirectory.from_config(_config())
    try:
        known = scripts.get_revision(revision)
    except CommandError:
        known = None
    if known is None:
        raise DatabaseTooNew(
            f"the database at {database.describe()} is at schema revision {revision!r}, which "
            f"this broker does not know (its newest is {head_revision()!r}): it was written by "
            "a newer broker version. Upgrade the broker; refusing to touch the database."
        )
    return revision


def upgrade(database: Database) -> str:
    """Migrate to the newest revision; returns it."""
    before = check_known(database)
    try:
        with database.engine.begin() as connection:
            command.upgrade(_config(connection), "head")
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot migrate {database.describe()}: {exc.orig!s}") from exc
    head = head_revision()
    if before != head:
        log.info("database schema migrated", extra={"from_revision": before, "to_revision": head})
    return head


def is_current(database: Database) -> bool:
    return check_known(database) == head_revision()
