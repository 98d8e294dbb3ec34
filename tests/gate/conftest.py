"""The gate world fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from worlds import World, make_world

from broker.store.database import Database


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    built = await make_world(db)
    yield built
    await built.gate.close()
