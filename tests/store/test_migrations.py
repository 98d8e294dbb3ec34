"""Migrations build a fresh database, and a database from a newer broker is refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from broker.errors import DatabaseTooNew
from broker.store.database import Database
from broker.store.migrate import current_revision, head_revision, is_current, upgrade
from broker.store.tables import metadata


def test_a_fresh_database_is_built_by_the_migrations(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    try:
        assert current_revision(database) is None
        assert upgrade(database) == head_revision()
        assert is_current(database)
        names = set(sa.inspect(database.engine).get_table_names())
        assert {t.name for t in metadata.sorted_tables} <= names
        # Running it again is a no-op.
        assert upgrade(database) == head_revision()
    finally:
        database.close()


def test_the_migrated_schema_matches_the_tables(empty_database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    database = Database(empty_database_url)
    try:
        upgrade(database)
        with database.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], f"tables and migrations disagree: {diff}"
    finally:
        database.close()


def test_a_database_from_a_newer_broker_is_refused(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    try:
        upgrade(database)
        with database.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
        with pytest.raises(DatabaseTooNew, match="newer broker") as raised:
            upgrade(database)
        assert "9999_from_the_future" in str(raised.value)
        # Nothing was touched.
        assert current_revision(database) == "9999_from_the_future"
    finally:
        database.close()
