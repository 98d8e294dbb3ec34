"""A running broker with the demo seed, and the car maker's backend's holder-change token."""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_app import App, start_app


@pytest.fixture
async def app(database_url: str, tmp_path: Path, aiohttp_client: object) -> App:
    started = await start_app(database_url, tmp_path, aiohttp_client)
    started.backend = await started.token("broker-backend", "demo-secret-broker-backend", "holders")
    return started
