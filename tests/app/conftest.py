"""A running broker with the demo seed, and tokens for the customer app's JSON API.

``kit.token("anna", scope)`` logs the customer in and runs the customer app's
code flow (a public client with PKCE: no consent page); ``kit.insurer_token()``
runs the insurer's code flow with anna's consent (a new grant on her Cooper);
``kit.release(...)`` asks the gate for a release, as a channel would.
The ``webhook_kit`` is the same on a broker that delivers webhooks to loopback
only when a test's own worker drains its queue.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from oauth_site import REDIRECT, SCOPE, Site, consent, log_in, make_site
from worlds import COOPER, NOW

from broker.domain.contracts import Channel
from broker.gate.release import Outcome, PopulationTarget, ReleaseRequest, VehicleTarget

APP_REDIRECT = "http://localhost:8080/app/callback"
ALL_SCOPES = "grants:read grants:write data:read data:export"
PASSWORDS = {name: f"demo-password-{name}" for name in ("anna", "bram", "carla")}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Kit:
    site: Site

    async def token(self, login: str, scope: str = ALL_SCOPES) -> str:
        await log_in(self.site, login, PASSWORDS[login])
        body = await self._code_flow("customer-app", APP_REDIRECT, scope, None)
        return str(body["access_token"])

    async def insurer_tokens(self) -> dict[str, Any]:
        """anna consents to the insurer on her Cooper: the insurer's token response."""
        await log_in(self.site, "anna", PASSWORDS["anna"])
        return await self._code_flow("insurer-demo", REDIRECT, SCOPE, "demo-secret-insurer-demo")

    async def _code_flow(
        self, client_id: str, redirect: str, scope: str, secret: str | None
    ) -> dict[str, Any]:
        verifier, challenge = pkce()
        params = {
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
            "scope": scope, "state": "st", "code_challenge": challenge,
            "code_challenge_method": "S256",
        }  # fmt: skip
        url = f"/oauth/authorize?{urlencode(params)}"
        if secret is None:
            response = await self.site.browser.get(url, allow_redirects=False)
            assert response.status == 302, await response.text()
            location = response.headers["Location"]
        else:
            location = await consent(self.site, url)
        code = parse_qs(urlsplit(location).query)["code"][0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                "code_verifier": verifier}  # fmt: skip
        headers = {}
        if secret is None:
            form["client_id"] = client_id
        else:
            basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        response = await self.site.browser.post("/oauth/token", data=form, headers=headers)
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body

    async def api(self, method: str, path: str, token: str, **kwargs: Any) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        response = await self.site.browser.request(method, path, headers=headers, **kwargs)
        text = await response.text()
        body = await response.json(content_type=None) if text else None
        return response.status, body, response

    def ingest(self, records: list[dict[str, Any]]) -> Any:
        from broker.ingest.service import RawItem

        items = [RawItem(record, index) for index, record in enumerate(records)]
        return self.site.broker.ingest.ingest_sync(items, source="test")

    async def release(
        self,
        recipient: str = "rcp-insurer",
        contract: str = "insurer-ubi",
        purpose: str = "usage-based-insurance",
        channel: Channel = Channel.PULL,
        categories: frozenset[str] = frozenset({"vehicle.status", "vehicle.position"}),
        vin: str | None = COOPER,
        since: datetime = NOW - timedelta(days=1),
        until: datetime | None = None,
    ) -> Outcome:
        request = ReleaseRequest(
            recipient_id=recipient,
            contract_id=contract,
            channel=channel,
            purpose=purpose,
            target=VehicleTarget(vin) if vin else PopulationTarget(),
            categories=categories,
            since=since,
            until=until or self.site.clock.now() + timedelta(seconds=1),
        )
        return await self.site.broker.gate.release(request)


def record(record_id: str, vin: str, category: str, at: datetime, data: dict[str, Any]) -> Any:
    from broker.clock import format_instant

    return {"record_id": record_id, "vin": vin, "category": category,
            "recorded_at": format_instant(at), "data": data}  # fmt: skip


POSITION = {"latitude": 52.370216, "longitude": 4.895167, "speed_kmh": 50.0,
            "heading_deg": 90.0, "trip_id": "t1"}  # fmt: skip
STATUS = {"mileage_km": 1000.0, "battery_voltage_v": 13.9, "doors_locked": True}


@pytest.fixture
async def site(database_url: str, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> Site:
    return await make_site(database_url, tmp_path, aiohttp_server, aiohttp_client)


@pytest.fixture
def kit(site: Site) -> Kit:
    return Kit(site)


@pytest.fixture
async def webhook_kit(
    database_url: str, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> Kit:
    """Like ``kit``, on a broker whose webhooks may go to http://127.0.0.1 and that runs no
    delivery worker of its own (a test drains the queue with its own worker)."""
    site = await make_site(
        database_url, tmp_path, aiohttp_server, aiohttp_client,
        webhook_allow_http_loopback=True, webhook_worker=False,
    )  # fmt: skip
    return Kit(site)


Kit.record = staticmethod(record)  # type: ignore[attr-defined]
Kit.POSITION = POSITION  # type: ignore[attr-defined]
Kit.STATUS = STATUS  # type: ignore[attr-defined]
