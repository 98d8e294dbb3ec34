"""Pull API test helpers (importable as ``pull_site``): the insurer client of
examples/insurer_pull.py, consent, driving, client-credentials tokens."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from oauth_site import REDIRECT, Site, consent, log_in
from worlds import ROOT

from broker.clock import format_instant
from broker.ingest.service import RawItem


def _load_example() -> ModuleType:
    name = "insurer_pull_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "insurer_pull.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


example = _load_example()


def dpop_key(site: Site) -> Any:
    """The example's DPoP key, signing with the broker's (manual) clock."""
    return example.DpopKey(clock=lambda: site.clock.now().timestamp())


def insurer_client(site: Site, *, key: Any = None, scope: str | None = None) -> Any:
    kwargs: dict[str, Any] = {}
    if scope is not None:
        kwargs["scope"] = scope
    return example.InsurerClient(
        "insurer-demo",
        "demo-secret-insurer-demo",
        redirect_uri=REDIRECT,
        scope=kwargs.get("scope", example.SCOPE),
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
        dpop_key=key or dpop_key(site),
    )


async def code_flow(
    site: Site, client: Any, *, login: str = "anna", **choices: str
) -> dict[str, Any]:
    """anna (or another customer) logs in and consents; the client gets its token."""
    import secrets

    meta = await (await site.browser.get("/.well-known/oauth-authorization-server")).json()
    await log_in(site, login, f"demo-password-{login}")
    verifier = secrets.token_urlsafe(48)
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
    location = await consent(site, url, **choices)
    token: dict[str, Any] = await client.fetch_token(
        meta["token_endpoint"], authorization_response=location, code_verifier=verifier
    )
    return token


def drive(site: Site, vin: str, start: datetime, minutes: int, prefix: str = "d") -> None:
    """Ingest a status and a position record per minute from ``start``."""
    items = []
    for minute in range(minutes):
        at = format_instant(start + timedelta(minutes=minute))
        items.append({"record_id": f"{prefix}s-{vin[-5:]}-{minute}", "vin": vin,
                      "category": "vehicle.status", "recorded_at": at,
                      "data": {"mileage_km": 1000.0 + minute,
                               "battery_voltage_v": 13.9}})  # fmt: skip
        items.append({"record_id": f"{prefix}p-{vin[-5:]}-{minute}", "vin": vin,
                      "category": "vehicle.position", "recorded_at": at,
                      "data": {"latitude": 52.37 + minute / 10000, "longitude": 4.89,
                               "speed_kmh": 50.0, "heading_deg": 90.0}})  # fmt: skip
    raw = [RawItem(item, index) for index, item in enumerate(items)]
    result = site.broker.ingest.ingest_sync(raw, source="test")
    assert result.rejected == 0


async def client_token(site: Site, client_id: str, scope: str) -> str:
    response = await site.browser.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": "Basic " + _basic(client_id, f"demo-secret-{client_id}")},
    )
    assert response.status == 200, await response.text()
    return str((await response.json())["access_token"])


def _basic(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode()
