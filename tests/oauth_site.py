"""A running broker with the demo seed, a browser with cookies, and OAuth helpers
(importable as ``oauth_site``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import CookieJar
from aiohttp.test_utils import TestClient, TestServer
from authlib.integrations.httpx_client import AsyncOAuth2Client
from ingest_app import free_port
from worlds import COOPER, NOW, ROOT

from broker.bootstrap import RUNTIME, Broker, create_web_app
from broker.clock import ManualClock
from broker.services.seed import apply_seed, read_seed
from broker.settings import Settings

REDIRECT = "http://localhost:9001/callback"
SCOPE = "vehicle.status:read vehicle.position:read"


@dataclass
class Site:
    server: TestServer
    browser: TestClient  # type: ignore[type-arg]
    broker: Broker
    clock: ManualClock

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


async def make_site(
    database_url: str,
    tmp_path: Path,
    aiohttp_server: Any,
    aiohttp_client: Any,
    **overrides: Any,
) -> Site:
    """The broker on ``database_url`` with the demo seed; ``overrides`` are settings."""
    port = free_port()
    settings = replace(
        Settings(),
        database_url=database_url,
        public_url=f"http://127.0.0.1:{port}",
        master_key_file=tmp_path / "master.key",
        audit_key_file=tmp_path / "audit.key",
        oauth_keys_dir=tmp_path / "oauth-keys",
        **overrides,
    )
    clock = ManualClock(NOW)
    app = create_web_app(settings, clock=clock)
    server = await aiohttp_server(app, port=port)
    broker = app[RUNTIME].require()
    seed = read_seed(broker.documents, ROOT / "examples" / "demo-seed.json")
    broker.database.run_sync(
        lambda s: apply_seed(s, seed, broker.grants, vault=broker.vault, now=NOW), write=True
    )
    jar = CookieJar(unsafe=True, treat_as_secure_origin=server.make_url("/"))
    browser = await aiohttp_client(server, cookie_jar=jar)
    return Site(server, browser, broker, clock)


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


async def log_in(site: Site, login: str = "anna", password: str = "demo-password-anna") -> None:
    page = await site.browser.get("/login", allow_redirects=False)
    token = hidden_fields(await page.text())["csrf_token"]
    response = await site.browser.post(
        "/login",
        data={"csrf_token": token, "login": login, "password": password},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()


def oauth_client(**kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        "insurer-demo",
        "demo-secret-insurer-demo",
        redirect_uri=REDIRECT,
        scope=SCOPE,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
        **kwargs,
    )


async def consent(site: Site, url: str, decision: str = "approve", **choices: str) -> str:
    """Open the authorization URL in the browser, answer the consent page; the redirect."""
    page = await site.browser.get(relative(url), allow_redirects=False)
    assert page.status == 200, await page.text()
    html = await page.text()
    assert "Prinsengracht" not in html  # the consent page shows no contact data
    form = hidden_fields(html) | {"decision": decision, "vehicle": COOPER} | choices
    form.setdefault("category", "vehicle.position")
    answer = await site.browser.post("/oauth/authorize", data=form, allow_redirects=False)
    assert answer.status == 302, await answer.text()
    return answer.headers["Location"]
