"""The running-app fixture for ingest tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_app import App, start_app


@pytest.fixture
async def app(database_url: str, tmp_path: Path, aiohttp_client: object) -> App:
    return await start_app(database_url, tmp_path, aiohttp_client)
