"""Add the customer pages to the broker's application.

The composition root calls :func:`add_web_routes` before the application
starts, handing it a getter for the running broker (read at request time, so
the broker may be opened in the application's lifecycle).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from broker.http.openapi import form_body, html, path_param, problem, query, redirect, route
from broker.web import WEB, WebContext, WebRuntime
from broker.web import login as login_pages
from broker.web.i18n import Catalogues
from broker.web.render import build_templates, page_error_middleware, render
from broker.web.sessions import require_customer

__all__ = ["WebRuntime", "add_web_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_CACHE = "public, max-age=3600"
TAG = "customer pages"


def add_web_routes(
    app: web.Application,
    *,
    runtime_getter: Callable[[], WebRuntime],
    csrf_key: bytes | None = None,
) -> None:
    """The login pages, the start page and ``/static/`` on ``app`` (before it starts).

    ``csrf_key`` signs the login form's token; by default a random key made
    now, so several broker processes behind one address need a shared one.
    """
    if csrf_key is not None and len(csrf_key) < 32:
        raise ValueError("the CSRF key needs at least 32 bytes")
    app[WEB] = WebContext(
        runtime=runtime_getter,
        csrf_key=csrf_key if csrf_key is not None else secrets.token_bytes(32),
        templates=build_templates(),
        catalogues=Catalogues.load(),
    )
    app.middlewares.append(page_error_middleware)
    static_files = {path.name: path for path in STATIC_DIR.glob("*.css")}

    async def static_file(request: web.Request) -> web.StreamResponse:
        path = static_files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": STATIC_CACHE})

    async def warm_up(_app: web.Application) -> None:
        # The dummy hash for unknown logins is made now, not on the first failed login.
        await asyncio.to_thread(login_pages.dummy_hash)

    session: list[tuple[str, list[str]]] = [("session", [])]
    page = html("The page.")
    to_login = redirect("Not logged in: to the login page, and back here afterwards.")
    refused = html("The form came without its CSRF token, or from another site.")
    route(
        app,
        "GET",
        "/",
        home,
        summary="The logged-in customer's start page",
        tag=TAG,
        security=session,
        responses={200: page, 303: to_login},
    )
    route(
        app,
        "GET",
        "/login",
        login_pages.login_page,
        summary="The login form",
        tag=TAG,
        parameters=[query("next", {"type": "string"}, "A local path to go to after login.")],
        responses={200: page},
    )
    route(
        app,
        "POST",
        "/login",
        login_pages.login_submit,
        summary="Log in (Argon2id password check, back-off per login name)",
        tag=TAG,
        request_body=form_body(
            {
                "csrf_token": {"type": "string"},
                "login": {"type": "string", "maxLength": 128},
                "password": {"type": "string"},
                "next": {"type": "string"},
            },
            required=["csrf_token", "login", "password"],
        ),
        responses={
            303: redirect("Logged in: to the form's next page."),
            400: html("The form again, saying what is wrong."),
            403: refused,
            429: html("Too many failures for this login name: try again later."),
        },
    )
    route(
        app,
        "POST",
        "/logout",
        login_pages.logout,
        summary="Log out",
        tag=TAG,
        security=session,
        request_body=form_body({"csrf_token": {"type": "string"}}, required=["csrf_token"]),
        responses={303: redirect("Logged out: to the login page."), 403: refused},
    )
    route(
        app,
        "GET",
        "/static/{name}",
        static_file,
        summary="The pages' stylesheets (served locally, cached for an hour)",
        tag=TAG,
        parameters=[path_param("name", {"type": "string"}, "The file name.")],
        responses={
            200: {"description": "The file.", "content": {"text/css": {"schema": {}}}},
            404: problem("No such file."),
        },
    )
    app.on_startup.append(warm_up)


async def home(request: web.Request) -> web.StreamResponse:
    """``GET /``: the logged-in customer's start page, leading to the customer app's pages."""
    await require_customer(request)
    return await render(request, "home.html")
