from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
async def site(database_url: str, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> Any:
    from oauth_site import make_site

    return await make_site(database_url, tmp_path, aiohttp_server, aiohttp_client)


@pytest.fixture(scope="module")
def other_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())
