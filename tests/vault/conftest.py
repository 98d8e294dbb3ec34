"""Fixtures for the vault tests: a vault under a fixed master key, and customers to erase."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.clock import ManualClock
from broker.credentials import hash_password
from broker.store.database import Database
from broker.store.tables import CustomerRow
from broker.vault.vault import Vault

MASTER_KEY = bytes(range(32))


@pytest.fixture
def vault(clock: ManualClock) -> Vault:
    return Vault(MASTER_KEY, clock)


@pytest.fixture
def add_customer(db: Database, clock: ManualClock) -> Callable[[str], str]:
    """Create a customer ``id`` (login ``<id>@example.test``, password ``secret-<id>``)."""

    def add(customer_id: str) -> str:
        row = CustomerRow(
            id=customer_id,
            login=f"{customer_id}@example.test",
            password_hash=hash_password(f"secret-{customer_id}"),
            created_at=clock.now(),
        )
        db.run_sync(lambda s: s.add(row), write=True)
        return customer_id

    return add
