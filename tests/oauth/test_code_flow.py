"""The authorization code flow end to end: a browser logs in and consents, authlib's client
gets, refreshes, introspects and revokes the tokens. Real HTTP on localhost."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.integrations.base_client.errors import OAuthError
from oauth_site import REDIRECT, SCOPE, Site, consent, log_in, oauth_client, relative
from worlds import COOPER


async def test_the_code_flow_with_authlibs_client(site: Site) -> None:
    meta = await (await site.browser.get("/.well-known/oauth-authorization-server")).json()
    await log_in(site)
    verifier = secrets.token_urlsafe(48)
    async with oauth_client() as client:
        url, state = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier
        )
        page = await site.browser.get(relative(url), allow_redirects=False)
        html = await page.text()
        # A browser may follow the answer's redirect to the client, and nowhere else.
        policy = page.headers["Content-Security-Policy"]
        assert "form-action 'self' http://localhost:9001;" in policy
        # The consent page, in anna's language, names what she agrees to.
        assert "Gegevens delen met" in html
        for fact in ("Polder", "6(1)(a)", "NL"):
            assert fact in html, fact
        location = await consent(site, url, precision="coarse")
        query = parse_qs(urlsplit(location).query)
        assert location.startswith(REDIRECT)
        assert query["state"] == [state]
        assert query["iss"] == [meta["issuer"]]  # RFC 9207
        token = await client.fetch_token(
            meta["token_endpoint"], authorization_response=location, code_verifier=verifier
        )
        assert token["refresh_token"] and token["token_type"].lower() == "bearer"
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        grants = (await (await site.browser.get("/v1/recipient/grants", headers=headers)).json())[
            "grants"
        ]
        # One grant: anna's open grant for this contract and car, amended by the new consent.
        assert len(grants) == 1 and grants[0]["grant"] == "gr-677f38bc93017473"
        assert {"vehicle.status", "vehicle.position"} <= set(grants[0]["categories"])
        assert "vehicle.position:read" in token["scope"].split()

        # Refresh rotates; the old refresh token is then dead, and reusing it kills the family.
        refreshed = await client.refresh_token(
            meta["token_endpoint"], refresh_token=token["refresh_token"]
        )
        assert refreshed["refresh_token"] != token["refresh_token"]
        with pytest.raises(OAuthError, match="invalid_grant"):
            await client.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
        with pytest.raises(OAuthError, match="invalid_grant"):
            await client.refresh_token(
                meta["token_endpoint"], refresh_token=refreshed["refresh_token"]
            )
        revoked = await site.browser.get(
            "/v1/recipient/grants",
            headers={"Authorization": f"Bearer {refreshed['access_token']}"},
        )
        assert revoked.status == 401  # the family's access tokens died with it


async def test_declining_creates_nothing(site: Site) -> None:
    from broker.store import grants as grant_store

    await log_in(site)
    before = site.broker.database.run_sync(lambda s: grant_store.for_vehicle(s, COOPER))
    async with oauth_client() as client:
        url, state = client.create_authorization_url(
            f"{site.base}/oauth/authorize", code_verifier=secrets.token_urlsafe(48)
        )
        location = await consent(site, url, decision="decline")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["access_denied"] and query["state"] == [state]
    after = site.broker.database.run_sync(lambda s: grant_store.for_vehicle(s, COOPER))
    assert [g.id for g in after] == [g.id for g in before]


def challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


async def authorize_url(site: Site, **overrides: str) -> str:
    params = {
        "response_type": "code",
        "client_id": "insurer-demo",
        "redirect_uri": REDIRECT,
        "scope": SCOPE,
        "state": "s1",
        "code_challenge": challenge("v" * 50),
        "code_challenge_method": "S256",
    } | overrides
    params = {k: v for k, v in params.items() if v != ""}
    from urllib.parse import urlencode

    return f"/oauth/authorize?{urlencode(params)}"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge": "", "code_challenge_method": ""}, "invalid_request"),  # no PKCE
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),  # the default would be plain
    ],
)
async def test_pkce_is_required_and_s256_only(
    site: Site, overrides: dict[str, str], error: str
) -> None:
    await log_in(site)
    response = await site.browser.get(await authorize_url(site, **overrides), allow_redirects=False)
    assert response.status == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == [error] and query["state"] == ["s1"]


async def test_a_redirect_uri_mismatch_is_never_followed(site: Site) -> None:
    await log_in(site)
    for uri in ("http://localhost:9001/callback/evil", "https://evil.example/callback"):
        response = await site.browser.get(
            await authorize_url(site, redirect_uri=uri), allow_redirects=False
        )
        assert response.status == 400
        assert "Location" not in response.headers


async def code_for(site: Site, verifier: str) -> str:
    await log_in(site)
    url = await authorize_url(site, code_challenge=challenge(verifier))
    location = await consent(site, url)
    return parse_qs(urlsplit(location).query)["code"][0]


async def exchange(site: Site, code: str, verifier: str | None) -> tuple[int, dict[str, Any]]:
    basic = base64.b64encode(b"insurer-demo:demo-secret-insurer-demo").decode()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        form["code_verifier"] = verifier
    response = await site.browser.post(
        "/oauth/token", data=form, headers={"Authorization": f"Basic {basic}"}
    )
    return response.status, await response.json()


async def test_a_code_works_once_within_60_seconds_and_with_its_verifier(site: Site) -> None:
    from datetime import timedelta

    verifier = secrets.token_urlsafe(48)
    code = await code_for(site, verifier)
    assert (await exchange(site, code, None))[1]["error"] == "invalid_request"  # no verifier
    assert (await exchange(site, code, "x" * 50))[1]["error"] == "invalid_grant"  # mismatched
    status, body = await exchange(site, code, verifier)
    assert status == 200, body
    status, body = await exchange(site, code, verifier)
    assert body["error"] == "invalid_grant"  # reuse
    late = await code_for(site, verifier)
    site.clock.advance(timedelta(seconds=61))
    assert (await exchange(site, late, verifier))[1]["error"] == "invalid_grant"  # expired


async def test_the_token_answer_names_only_the_new_grant_and_a_per_recipient_sub(
    site: Site,
) -> None:
    """OAuth protocol answers are the second written exception: they name only the grant
    the customer has just given (or amended), and the customer by this recipient's own
    pseudonym; the grant's event is the audit entry that records them."""
    import jwt

    from broker.oauth.server import customer_subject
    from broker.store import audit as audit_store

    await log_in(site)
    verifier = secrets.token_urlsafe(48)
    async with oauth_client() as client:
        url, _ = client.create_authorization_url(
            f"{site.base}/oauth/authorize", code_verifier=verifier
        )
        location = await consent(site, url, precision="coarse")
        token = await client.fetch_token(
            f"{site.base}/oauth/token", authorization_response=location, code_verifier=verifier
        )
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    [granted] = claims["grants"]
    assert granted == "gr-677f38bc93017473"  # anna's open grant, amended by this consent
    keyring = site.broker.keyring
    assert claims["sub"] == customer_subject(keyring, "rcp-insurer", "cus-anna")
    assert claims["sub"] != customer_subject(keyring, "rcp-dealer", "cus-anna")
    assert "cus-anna" not in token["access_token"] and "anna" not in str(claims)
    log = site.broker.database.run_sync(lambda s: audit_store.read(s, start=0, limit=10**6))
    created = [e for e in log if e.kind == "grant_event" and e.grant_ids == (granted,)]
    assert created and created[-1].details["to"] == "active"  # given by this consent
    assert all(e.legal_basis == "6(1)(a)" for e in created)  # the Art. 6 code, not "consent"
    assert {e.details["activation"] for e in created} == {"consent"}
    assert all(e.details["recipient_sub"] == "pseudonym" for e in created)
