"""An insurer's client of the broker's pull API, built on authlib's own OAuth client.

It discovers the endpoints from the authorization server's metadata (RFC 8414),
runs the authorization code flow with PKCE (the customer consents in a
browser), proves possession of its key with DPoP (RFC 9449) when the contract
asks for it, and pulls every page of a vehicle's records.

Run it against the demo (``make demo`` in another terminal)::

    .venv/bin/python examples/insurer_pull.py --broker http://127.0.0.1:8080

It prints the authorization URL: open it, log in as ``anna`` (password
``demo-password-anna``), consent, and paste the address the browser was sent
to. Nothing in here imports the broker: it is what an insurer would write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import httpx2 as httpx
import jwt
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Auth
from cryptography.hazmat.primitives.asymmetric import ec

SCOPE = "vehicle.status:read vehicle.position:read"


class DpopKey:
    """The client's DPoP key pair (EC P-256) and the proofs it signs."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        self.clock = clock
        public = self.private_key.public_key()
        self.public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
        self.nonce: str | None = None  # the server's latest DPoP-Nonce, if it asks for one

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": url.split("?", 1)[0].split("#", 1)[0],
            "iat": int(self.clock()),
        }
        if access_token is not None:
            import base64
            import hashlib

            digest = hashlib.sha256(access_token.encode("ascii")).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if self.nonce is not None:
            claims["nonce"] = self.nonce
        headers = {"typ": "dpop+jwt", "jwk": self.public_jwk}
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers=headers)


class DpopTokenAuth(OAuth2Auth):  # type: ignore[misc]
    """authlib's token auth, plus the ``DPoP`` scheme: a fresh proof on every request, and
    one retry with the server's nonce when it answers ``use_dpop_nonce``."""

    key: DpopKey | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if str(self.token.get("token_type", "bearer")).lower() != "dpop" or self.key is None:
            yield from super().auth_flow(request)
            return
        access_token = self.token["access_token"]
        for _ in range(2):
            request.headers["Authorization"] = f"DPoP {access_token}"
            request.headers["DPoP"] = self.key.proof(request.method, str(request.url), access_token)
            response = yield request
            nonce = response.headers.get("DPoP-Nonce")
            if nonce:
                self.key.nonce = nonce
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code != 401 or "use_dpop_nonce" not in challenge:
                return


class InsurerClient(AsyncOAuth2Client):  # type: ignore[misc]
    """authlib's AsyncOAuth2Client that binds its tokens to a DPoP key."""

    token_auth_class = DpopTokenAuth

    def __init__(self, *args: Any, dpop_key: DpopKey | None = None, **kwargs: Any) -> None:
        self.dpop_key = dpop_key or DpopKey()
        hooks = kwargs.setdefault("event_hooks", {})
        hooks.setdefault("response", []).append(self._remember_nonce)
        super().__init__(*args, **kwargs)
        self.token_auth.key = self.dpop_key

    async def _remember_nonce(self, response: httpx.Response) -> None:
        nonce = response.headers.get("DPoP-Nonce")
        if nonce:
            self.dpop_key.nonce = nonce

    async def fetch_token(self, url: str | None = None, **kwargs: Any) -> Any:
        return await self._with_proof(super().fetch_token, url, **kwargs)

    async def refresh_token(self, url: str | None = None, **kwargs: Any) -> Any:
        return await self._with_proof(super().refresh_token, url, **kwargs)

    async def _with_proof(self, call: Any, url: str | None, **kwargs: Any) -> Any:
        endpoint = url or self.metadata.get("token_endpoint")
        for attempt in range(2):
            headers = dict(kwargs.pop("headers", None) or {})
            headers["DPoP"] = self.dpop_key.proof("POST", endpoint)
            try:
                return await call(url, headers=headers, **kwargs)
            except OAuthError as error:  # retried once with the nonce the server sent
                if error.error != "use_dpop_nonce" or attempt:
                    raise


async def discover(http: httpx.AsyncClient, broker: str) -> dict[str, Any]:
    response = await http.get(f"{broker}/.well-known/oauth-authorization-server")
    response.raise_for_status()
    return dict(response.json())


async def pull_all(
    client: InsurerClient,
    broker: str,
    vehicle: str,
    *,
    since: str,
    until: str,
    categories: list[str],
    limit: int = 500,
) -> AsyncIterator[dict[str, Any]]:
    """Every record of the vehicle in [since, until), following ``next_cursor``."""
    params: list[tuple[str, str]] = [("since", since), ("until", until), ("limit", str(limit))]
    params += [("category", c) for c in categories]
    cursor: str | None = None
    while True:
        page_params = params + ([("cursor", cursor)] if cursor else [])
        response = await client.get(
            f"{broker}/v1/recipient/vehicles/{vehicle}/records", params=page_params
        )
        if response.status_code == 429:
            await asyncio.sleep(int(response.headers.get("Retry-After", "1")))
            continue
        response.raise_for_status()
        page = response.json()
        for record in page["records"]:
            yield record
        cursor = page["next_cursor"]
        if cursor is None:
            return


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="http://127.0.0.1:8080")
    parser.add_argument("--client-id", default="insurer-demo")
    parser.add_argument("--client-secret", default="demo-secret-insurer-demo")
    parser.add_argument("--redirect-uri", default="http://localhost:9001/callback")
    parser.add_argument("--since", default="2026-01-01T00:00:00Z")
    parser.add_argument("--until", default="2027-01-01T00:00:00Z")
    args = parser.parse_args(argv)
    async with httpx.AsyncClient() as http:
        meta = await discover(http, args.broker)
    verifier = secrets.token_urlsafe(48)
    async with InsurerClient(
        args.client_id,
        args.client_secret,
        redirect_uri=args.redirect_uri,
        scope=SCOPE,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",  # noqa: S106 (a method name)
    ) as client:
        url, _state = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier
        )
        print(f"Open this address, log in and consent:\n  {url}")
        prompt = "Paste the address your browser was sent to: "
        answer = (await asyncio.to_thread(input, prompt)).strip()
        await client.fetch_token(
            meta["token_endpoint"], authorization_response=answer, code_verifier=verifier
        )
        vehicles = (await client.get(f"{args.broker}/v1/recipient/vehicles")).json()["vehicles"]
        for vehicle in vehicles:
            count = 0
            async for _record in pull_all(
                client,
                args.broker,
                vehicle["vehicle"],
                since=max(args.since, vehicle["since"]),
                until=args.until,
                categories=vehicle["categories"],
            ):
                count += 1
            print(f"{vehicle['vehicle']}: {count} records under {vehicle['contract']}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
