"""Persistence: SQLModel tables, the database runner, migrations and repositories.

The only package that imports SQLModel/SQLAlchemy. SQLite (one file, WAL) by
default; PostgreSQL through ``BROKER_DATABASE_URL``; the same code for both.
"""
