"""Keys for the OAuth tests: the broker's signing keys and clients' keys of every type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from broker.oauth.keys import SigningKeys


@pytest.fixture
def keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def other_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ec384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
async def site(database_url: str, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> Any:
    from oauth_site import make_site

    return await make_site(database_url, tmp_path, aiohttp_server, aiohttp_client)
