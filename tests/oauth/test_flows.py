"""The authorization server over real HTTP, driven by authlib's own OAuth client."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from cryptography.hazmat.primitives import serialization
from ingest_app import App, free_port, start_app
from worlds import NOW

from broker.domain.grants import GrantAction


@pytest.fixture
async def app(database_url: str, tmp_path: Path, aiohttp_client: object) -> App:
    return await start_app(database_url, tmp_path, aiohttp_client, port=free_port())


def base(app: App) -> str:
    return str(app.client.make_url("")).rstrip("/")


async def discover(app: App) -> dict[str, Any]:
    response = await app.client.get("/.well-known/oauth-authorization-server")
    assert response.status == 200
    meta: dict[str, Any] = await response.json()
    return meta


async def test_metadata_and_keys_are_discoverable(app: App) -> None:
    meta = await discover(app)
    assert meta["issuer"] == base(app)  # RFC 8414 §3.3: the issuer is the URL it came from
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "vehicle.position:read" in meta["scopes_supported"]
    assert {"client_secret_basic", "private_key_jwt"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    jwks = await (await app.client.get("/oauth/jwks")).json()
    assert jwks["keys"] and all("d" not in key for key in jwks["keys"])  # public keys only
    assert {key["alg"] for key in jwks["keys"]} == {"ES256"}


async def recipient_token(app: App, client_id: str = "insurer-demo") -> dict[str, Any]:
    meta = await discover(app)
    async with AsyncOAuth2Client(
        client_id, f"demo-secret-{client_id}", token_endpoint_auth_method="client_secret_basic"
    ) as client:
        token: dict[str, Any] = await client.fetch_token(
            meta["token_endpoint"], grant_type="client_credentials"
        )
    return token


async def test_client_credentials_with_authlibs_client(app: App) -> None:
    token = await recipient_token(app)
    header = jwt.get_unverified_header(token["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["iss"] == base(app)
    assert claims["client_id"] == "insurer-demo"
    assert claims["token_kind"] == "recipient"
    assert {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"} <= set(claims)
    assert "refresh_token" not in token  # client credentials: no refresh token
    response = await app.client.get(
        "/v1/recipient/grants", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert response.status == 200
    grants = (await response.json())["grants"]
    assert [g["grant"] for g in grants] == ["gr-677f38bc93017473"]  # the insurer's active grant


async def test_a_wrong_client_secret_is_refused(app: App) -> None:
    meta = await discover(app)
    basic = base64.b64encode(b"insurer-demo:wrong").decode()
    response = await app.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_client"
    assert meta["token_endpoint"].endswith("/oauth/token")


async def introspect(app: App, token: str, client_id: str = "insurer-demo") -> dict[str, Any]:
    basic = base64.b64encode(f"{client_id}:demo-secret-{client_id}".encode()).decode()
    response = await app.client.post(
        "/oauth/introspect", data={"token": token}, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_introspection_and_revocation(app: App) -> None:
    token = (await recipient_token(app))["access_token"]
    active = await introspect(app, token)
    assert active["active"] is True and active["client_id"] == "insurer-demo"
    # Another client may not introspect it.
    assert await introspect(app, token, "fleet-demo") == {"active": False}
    basic = base64.b64encode(b"insurer-demo:demo-secret-insurer-demo").decode()
    revoked = await app.client.post(
        "/oauth/revoke", data={"token": token}, headers={"Authorization": f"Basic {basic}"}
    )
    assert revoked.status == 200
    assert await introspect(app, token) == {"active": False}
    response = await app.client.get(
        "/v1/recipient/grants", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 401


async def test_introspection_of_an_expired_token_is_exactly_inactive(app: App) -> None:
    token = (await recipient_token(app))["access_token"]
    app.clock.advance(timedelta(minutes=6))
    assert await introspect(app, token) == {"active": False}


def forge(claims: dict[str, Any], key: Any, *, alg: str, typ: str = "at+jwt") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"typ": typ})


async def test_forged_and_malformed_tokens_are_refused(app: App) -> None:
    good = (await recipient_token(app))["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    public_pem = app.broker.oauth.keys.current.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = app.broker.oauth.keys.current.private_key
    header, payload, signature = good.split(".")
    unsigned = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
        .rstrip(b"=")
        .decode()
    )
    hs256 = jwt.api_jws.PyJWS()
    hs256._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[attr-defined]
    cases = {
        "alg none": f"{unsigned}.{payload}.",
        "HS256 with the public key": hs256.encode(
            json.dumps(claims).encode(),
            public_pem,
            algorithm="HS256",
            headers={"typ": "at+jwt", "kid": app.broker.oauth.keys.current_kid},
        ),
        "wrong typ": forge(claims, private, alg="ES256", typ="JWT"),
        "expired": forge(claims | {"exp": claims["iat"] - 10}, private, alg="ES256"),
        "wrong issuer": forge(claims | {"iss": "https://evil.example"}, private, alg="ES256"),
        "tampered": f"{header}.{payload[:-3]}AAA.{signature}",
        "signed by another key": forge(
            claims, jwt.algorithms.ECAlgorithm.from_jwk(_fresh_ec_jwk()), alg="ES256"
        ),
    }
    for name, token in cases.items():
        response = await app.client.get(
            "/v1/recipient/grants", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 401, name
        assert "invalid_token" in response.headers["WWW-Authenticate"], name


def _fresh_ec_jwk() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.algorithms.ECAlgorithm.to_jwk(key)


async def test_the_authorization_matrix(app: App) -> None:
    recipient = f"Bearer {(await recipient_token(app))['access_token']}"
    backend = app.backend
    apis = {
        "recipient": ("GET", "/v1/recipient/grants"),
        "customer": ("GET", "/v1/me"),
        "ingest": ("POST", "/v1/ingest/records"),
    }
    allowed = {("recipient", "recipient"), ("backend", "ingest")}
    for holder, token in (("recipient", recipient), ("backend", backend)):
        for api, (method, path) in apis.items():
            response = await app.client.request(
                method, path, headers={"Authorization": token}, json=[]
            )
            if (holder, api) in allowed:
                assert response.status in {200, 207}, (holder, api)
            else:
                assert response.status == 401, (holder, api)


async def test_ending_a_grant_stops_its_tokens_at_once(app: App) -> None:
    token = f"Bearer {(await recipient_token(app))['access_token']}"
    before = await (
        await app.client.get("/v1/recipient/grants", headers={"Authorization": token})
    ).json()
    assert [g["grant"] for g in before["grants"]] == ["gr-677f38bc93017473"]
    app.broker.database.run_sync(
        lambda s: app.broker.grants.transition(
            s, "gr-677f38bc93017473", GrantAction.WITHDRAW, at=NOW + timedelta(seconds=1)
        ),
        write=True,
    )
    after = await (
        await app.client.get("/v1/recipient/grants", headers={"Authorization": token})
    ).json()
    assert after["grants"] == []


async def test_repeated_or_non_form_token_requests_are_refused(app: App) -> None:
    basic = base64.b64encode(b"insurer-demo:demo-secret-insurer-demo").decode()
    headers = {"Authorization": f"Basic {basic}"}
    repeated = await app.client.post(
        "/oauth/token?grant_type=client_credentials",
        data={"grant_type": "client_credentials"},
        headers=headers,
    )
    assert repeated.status == 400
    body = await repeated.json()
    assert body == {
        "error": "invalid_request",
        "error_description": "repeated parameter grant_type",
    }
    as_json = await app.client.post(
        "/oauth/token", json={"grant_type": "client_credentials"}, headers=headers
    )
    assert as_json.status == 400
    assert (await as_json.json())["error"] == "invalid_request"
