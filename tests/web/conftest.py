"""A running broker with the customer pages and the demo seed, and browsers to visit it.

Like ``ingest_app.start_app``, but the pages are added to the application
before its server starts (unless the composition root already adds them), and
every browser is a test client with a cookie jar of its own that, like a
browser on ``localhost``, treats the plain-http test server as a secure origin
(so ``Secure`` cookies are sent back).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, CookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from worlds import NOW, ROOT

from broker.bootstrap import RUNTIME, Broker, create_web_app
from broker.clock import ManualClock
from broker.services.seed import apply_seed, read_seed
from broker.settings import Settings
from broker.web import WEB
from broker.web.routes import add_web_routes
from broker.web.sessions import SESSION_COOKIE

Client = TestClient[web.Request, web.Application]


def csrf_token_in(html: str, action: str = "/login") -> str:
    """The CSRF token of the form posting to ``action`` in ``html``."""
    form = re.compile(
        rf'<form method="post" action="{re.escape(action)}"[^>]*>\s*'
        r'<input type="hidden" name="csrf_token" value="([^"]*)">'
    )
    match = form.search(html)
    assert match, f"the page has no form posting to {action} with a CSRF field"
    return match.group(1)


def set_cookies(response: ClientResponse) -> dict[str, Any]:
    """The response's ``Set-Cookie`` headers, parsed, by cookie name."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return dict(jar)


@dataclass
class Browser:
    """One browser: its own cookies; never follows redirects by itself."""

    client: Client

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.client.get(path, allow_redirects=False, **kwargs)

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> ClientResponse:
        return await self.client.post(path, data=data, allow_redirects=False, **kwargs)

    async def csrf_token(self, path: str = "/login", action: str = "/login") -> str:
        """The CSRF token of the form on page ``path`` that posts to ``action``."""
        response = await self.get(path)
        assert response.status == 200, await response.text()
        return csrf_token_in(await response.text(), action)

    async def login(
        self, login: str, password: str, *, next_path: str | None = None, **kwargs: Any
    ) -> ClientResponse:
        """Fill in and send the login form, as a browser would."""
        form = {"csrf_token": await self.csrf_token(), "login": login, "password": password}
        if next_path is not None:
            form["next"] = next_path
        return await self.post("/login", form, **kwargs)

    async def logout(self) -> ClientResponse:
        return await self.post("/logout", {"csrf_token": await self.csrf_token("/", "/logout")})

    # Helpers for the tests (a conftest is not importable under --import-mode=importlib).
    csrf_token_in = staticmethod(csrf_token_in)
    set_cookies = staticmethod(set_cookies)

    def session_cookie(self) -> str | None:
        for cookie in self.client.session.cookie_jar:
            if cookie.key == SESSION_COOKIE:
                return cookie.value
        return None


@dataclass
class WebApp:
    server: TestServer
    broker: Broker
    clock: ManualClock
    new_browser: Callable[[], Awaitable[Browser]]


@pytest.fixture
async def web_app(
    database_url: str, tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any
) -> WebApp:
    settings = replace(
        Settings(),
        database_url=database_url,
        master_key_file=tmp_path / "master.key",
        audit_key_file=tmp_path / "audit.key",
        oauth_keys_dir=tmp_path / "oauth-keys",
    )
    clock = ManualClock(NOW)
    app = create_web_app(settings, clock=clock)
    if WEB not in app:  # the composition root may add the pages itself
        add_web_routes(app, runtime_getter=app[RUNTIME].require)
    server: TestServer = await aiohttp_server(app)
    broker = app[RUNTIME].require()
    seed = read_seed(broker.documents, ROOT / "examples" / "demo-seed.json")
    broker.database.run_sync(
        lambda s: apply_seed(s, seed, broker.grants, vault=broker.vault, now=NOW), write=True
    )

    async def new_browser() -> Browser:
        jar = CookieJar(unsafe=True, treat_as_secure_origin=server.make_url("/"))
        client: Client = await aiohttp_client(server, cookie_jar=jar)
        return Browser(client)

    return WebApp(server, broker, clock, new_browser)


@pytest.fixture
async def browser(web_app: WebApp) -> Browser:
    return await web_app.new_browser()
