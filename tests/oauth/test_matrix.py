"""The authorization matrix cell by cell, customer app tokens, and private_key_jwt clients."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from oauth_site import REDIRECT, SCOPE, Site, consent, log_in, relative

from broker.clock import ManualClock
from broker.oauth import jose
from broker.store.tables import OAuthClientRow

APP_REDIRECT = "http://localhost:8080/app/callback"
APIS = {
    "recipient": ("GET", "/v1/recipient/grants"),
    "customer": ("GET", "/v1/me"),
    "ingest": ("POST", "/v1/ingest/records"),
}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


#: The insurer's contract requires DPoP-bound tokens: its tokens are bound to this key.
DPOP_KEY = ec.generate_private_key(ec.SECP256R1())


def dpop(site: Site, method: str, path: str, token: str | None = None) -> dict[str, str]:
    """A DPoP header for one request to ``path`` (RFC 9449), signed with :data:`DPOP_KEY`."""
    proof = jose.sign_dpop_proof(
        DPOP_KEY, method=method, url=f"{site.base}{path}", now=site.clock.now(),
        access_token=token,
    )  # fmt: skip
    return {"DPoP": proof}


def authorization(site: Site, kind: str, token: str, method: str, path: str) -> dict[str, str]:
    """The headers presenting ``token``: DPoP-bound for the insurer's (recipient) tokens."""
    if kind.startswith("recipient"):
        return {"Authorization": f"DPoP {token}", **dpop(site, method, path, token)}
    return {"Authorization": f"Bearer {token}"}


async def code_flow(
    site: Site, client_id: str, redirect: str, scope: str, secret: str | None
) -> dict[str, Any]:
    verifier, challenge = pkce()
    params = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
        "scope": scope, "state": "st", "code_challenge": challenge,
        "code_challenge_method": "S256",
    }  # fmt: skip
    url = f"/oauth/authorize?{urlencode(params)}"
    if client_id == "customer-app":  # first party: no consent page
        response = await site.browser.get(url, allow_redirects=False)
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
    else:
        location = await consent(site, url)
    code = parse_qs(urlsplit(location).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "code_verifier": verifier}  # fmt: skip
    headers = dpop(site, "POST", "/oauth/token") if client_id == "insurer-demo" else {}
    if secret is None:
        form["client_id"] = client_id
    else:
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    response = await site.browser.post("/oauth/token", data=form, headers=headers)
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def client_credentials(site: Site, client_id: str, secret: str, scope: str = "") -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
    headers = {"Authorization": f"Basic {basic}"}
    if client_id == "insurer-demo":
        headers |= dpop(site, "POST", "/oauth/token")
    response = await site.browser.post("/oauth/token", data=form, headers=headers)
    body = await response.json()
    assert response.status == 200, body
    return str(body["access_token"])


async def test_every_cell_of_the_authorization_matrix(site: Site) -> None:
    await log_in(site)
    tokens = {
        "recipient_customer": (
            await code_flow(site, "insurer-demo", REDIRECT, SCOPE, "demo-secret-insurer-demo")
        )["access_token"],
        "recipient": await client_credentials(site, "insurer-demo", "demo-secret-insurer-demo"),
        "customer": (await code_flow(site, "customer-app", APP_REDIRECT, "grants:read", None))[
            "access_token"
        ],
        "backend": await client_credentials(
            site, "broker-backend", "demo-secret-broker-backend", "ingest"
        ),
    }
    allowed = {
        ("recipient_customer", "recipient"),
        ("recipient", "recipient"),
        ("customer", "customer"),
        ("backend", "ingest"),
    }
    for kind, token in tokens.items():
        for api, (method, path) in APIS.items():
            headers = authorization(site, kind, token, method, path)
            response = await site.browser.request(method, path, headers=headers, json=[])
            expected = (kind, api) in allowed
            assert (response.status < 300) is expected, (kind, api, response.status)
            if not expected:
                assert response.status == 401
                challenge = response.headers["WWW-Authenticate"]
                assert challenge.startswith("DPoP" if kind.startswith("recipient") else "Bearer")


async def test_the_customer_apps_token_reaches_only_the_customers_own_api(site: Site) -> None:
    await log_in(site)
    token = (await code_flow(site, "customer-app", APP_REDIRECT, "grants:read", None))[
        "access_token"
    ]
    me = await site.browser.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert (await me.json()) == {"customer": "cus-anna", "language": "nl"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["token_kind"] == "customer" and claims["sub"] == "cus-anna"


async def test_a_customer_bound_token_has_a_pseudonymous_subject(site: Site) -> None:
    await log_in(site)
    token = await code_flow(site, "insurer-demo", REDIRECT, SCOPE, "demo-secret-insurer-demo")
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["sub"].startswith("psn_") and "cus-anna" not in token["access_token"]
    assert claims["token_kind"] == "recipient_customer"


async def test_private_key_jwt_client_authentication(site: Site) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = jose.public_jwk_of(key) | {"kid": "k1", "alg": "ES256", "use": "sig"}

    def register(session: Any) -> None:
        session.add(
            OAuthClientRow(
                client_id="insurer-pkjwt", kind="recipient", recipient_id="rcp-insurer",
                auth_method="private_key_jwt", jwks={"keys": [public]},
                redirect_uris=[REDIRECT], grant_types=["client_credentials"],
                scopes=["vehicle.status:read"], created_at=site.clock.now(),
            )
        )  # fmt: skip

    site.broker.database.run_sync(register, write=True)
    assert isinstance(site.clock, ManualClock)
    token_endpoint = f"{site.base}/oauth/token"

    async def ask(assertion: str) -> tuple[int, dict[str, Any]]:
        response = await site.browser.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            },
        )
        return response.status, await response.json()

    good = jose.sign_client_assertion(
        key, client_id="insurer-pkjwt", audience=site.base, now=site.clock.now(), kid="k1"
    )
    status, body = await ask(good)
    assert status == 200, body
    status, body = await ask(good)  # the same assertion again: a replay
    assert (status, body["error"]) == (401, "invalid_client")
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jose.sign_client_assertion(
        other, client_id="insurer-pkjwt", audience=token_endpoint, now=site.clock.now(), kid="k1"
    )
    status, body = await ask(forged)
    assert (status, body["error"]) == (401, "invalid_client")
    assert relative(token_endpoint) == "/oauth/token"


async def test_withdrawing_the_grant_kills_the_customer_bound_tokens(site: Site) -> None:
    from broker.domain.grants import GrantAction

    await log_in(site)
    token = await code_flow(site, "insurer-demo", REDIRECT, SCOPE, "demo-secret-insurer-demo")
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    [grant_id] = claims["grants"]

    def headers() -> dict[str, str]:
        path = "/v1/recipient/grants"
        return authorization(site, "recipient", token["access_token"], "GET", path)

    assert (await site.browser.get("/v1/recipient/grants", headers=headers())).status == 200
    site.broker.database.run_sync(
        lambda s: site.broker.grants.transition(
            s, grant_id, GrantAction.WITHDRAW, at=site.clock.now(), reason="withdrawn"
        ),
        write=True,
    )
    assert (await site.browser.get("/v1/recipient/grants", headers=headers())).status == 401
    basic = base64.b64encode(b"insurer-demo:demo-secret-insurer-demo").decode()
    for value in (token["access_token"], token["refresh_token"]):
        response = await site.browser.post(
            "/oauth/introspect", data={"token": value}, headers={"Authorization": f"Basic {basic}"}
        )
        assert await response.json() == {"active": False}
    refresh = await site.browser.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        headers={"Authorization": f"Basic {basic}", **dpop(site, "POST", "/oauth/token")},
    )
    assert (await refresh.json())["error"] == "invalid_grant"
