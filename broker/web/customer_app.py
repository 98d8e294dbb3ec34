"""The customer app's pages: my data sharing, one grant and its transfers, ending a
grant (with a confirmation step), my vehicles' location switches, and the copy of
my data.

Each page is a thin view over :class:`broker.services.customer_app.CustomerApp`,
the same use cases the JSON API (:mod:`broker.http.me`) serves. Actions are
forms posted with the session's CSRF token; a grant or vehicle that is not the
customer's is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar, Protocol

from aiohttp import web

from broker.clock import Clock, parse_instant
from broker.domain.grants import GrantAction
from broker.errors import NotFound, TransitionRefused
from broker.http.me import export_response
from broker.http.openapi import form_body, html, path_param, query, redirect, route
from broker.services.customer_app import CustomerApp, NotPermitted
from broker.store.database import Database
from broker.web import PageError
from broker.web.csrf import FormFields, read_session_form
from broker.web.render import render
from broker.web.sessions import require_customer

TAG = "customer pages"
SESSION: list[tuple[str, list[str]]] = [("session", [])]
PER_PAGE = 20
_ACTIONS = {"withdraw": GrantAction.WITHDRAW, "object": GrantAction.OBJECT}
_GRANT_ID = path_param("grant_id", {"type": "string", "maxLength": 64}, "The grant's id.")
_VIN = path_param("vin", {"type": "string", "minLength": 17, "maxLength": 17}, "The VIN.")
_LOGIN = redirect("Not logged in: to the login page, and back here afterwards.")
_NOT_FOUND = html("No such grant or vehicle of this customer (never says whether it exists).")
_CSRF = html("The form came without its CSRF token, or from another site.")


class AppRuntime(Protocol):
    database: Database
    clock: Clock
    customer_app: CustomerApp


class NotYours(PageError):
    """A grant or vehicle that does not exist for this customer."""

    status: ClassVar[int] = 404
    title_key: ClassVar[str] = "app.not_found_title"
    message_key: ClassVar[str] = "app.not_found_message"


class CannotEnd(PageError):
    status: ClassVar[int] = 409
    title_key: ClassVar[str] = "app.cannot_end_title"
    message_key: ClassVar[str] = "app.cannot_end_message"


class OwnerOnly(PageError):
    status: ClassVar[int] = 403
    title_key: ClassVar[str] = "app.owner_only_title"
    message_key: ClassVar[str] = "app.owner_only_message"


def when(value: str | None) -> str:
    """An RFC 3339 instant as shown on the pages: ``2026-03-10 12:00 UTC``."""
    if not value:
        return ""
    instant: datetime = parse_instant(value)
    return instant.strftime("%Y-%m-%d %H:%M UTC")


def add_customer_app_routes(app: web.Application, *, runtime: Callable[[], AppRuntime]) -> None:
    async def use(
        request: web.Request, work: Callable[[Any, str, datetime], Any], *, write: bool = False
    ) -> Any:
        """Run ``work(session, customer_id, now)`` for the logged-in customer, reading
        (or, with ``write``, in a write transaction)."""
        customer = await require_customer(request)
        broker = runtime()
        now = broker.clock.now()
        run = broker.database.write if write else broker.database.read
        try:
            return await run(lambda s: work(s, customer.id, now))
        except NotFound as error:
            raise NotYours(error.detail) from None

    async def overview(request: web.Request) -> web.StreamResponse:
        broker = runtime()
        data = await use(request, broker.customer_app.overview)
        return await render(request, "grants.html", when=when, **data)

    async def grant_page(request: web.Request) -> web.StreamResponse:
        broker = runtime()
        grant_id = request.match_info["grant_id"]
        page = _page_number(request)

        def work(session: Any, customer_id: str, now: datetime) -> tuple[Any, Any]:
            app_ = broker.customer_app
            grant = app_.grant(session, customer_id, grant_id, now)
            transfers = app_.transfers(
                session, customer_id, grant_id, now, page=page, per_page=PER_PAGE
            )
            return grant, transfers

        grant, transfers = await use(request, work)
        return await render(
            request,
            "grant.html",
            when=when,
            grant=grant,
            transfers=transfers,
            ended=request.query.get("ended") == "1",
        )

    async def confirm(request: web.Request) -> web.StreamResponse:
        broker = runtime()
        grant_id = request.match_info["grant_id"]
        action = request.query.get("action", "")
        if action not in _ACTIONS:
            raise NotYours("unknown action")
        grant = await use(request, lambda s, c, now: broker.customer_app.grant(s, c, grant_id, now))
        if action not in grant["rights"]["allowed"]:
            raise CannotEnd(f"{action} not allowed for this grant")
        return await render(request, "confirm.html", when=when, grant=grant, action=action)

    async def end(request: web.Request) -> web.StreamResponse:
        form = await read_session_form(request)
        broker = runtime()
        grant_id = request.match_info["grant_id"]
        action = _ACTIONS.get(_text(form.fields, "action"))
        if action is None:
            raise CannotEnd("unknown action")
        customer_id, now = form.session.customer.id, broker.clock.now()
        try:
            await broker.database.write(
                lambda s: broker.customer_app.end_grant(s, customer_id, grant_id, action, now)
            )
        except NotFound as error:
            raise NotYours(error.detail) from None
        except TransitionRefused as error:
            raise CannotEnd(error.detail) from None
        raise web.HTTPSeeOther(location=f"/grants/{grant_id}?ended=1")

    async def vehicles(request: web.Request) -> web.StreamResponse:
        broker = runtime()
        found = await use(request, broker.customer_app.vehicles)
        return await render(
            request, "vehicles.html", vehicles=found, saved=request.query.get("saved") == "1"
        )

    async def location(request: web.Request) -> web.StreamResponse:
        form = await read_session_form(request)
        broker = runtime()
        vin = request.match_info["vin"]
        collection = _text(form.fields, "collection") == "on"
        sharing = collection and _text(form.fields, "sharing") == "on"
        customer_id, now = form.session.customer.id, broker.clock.now()
        try:
            await broker.database.write(
                lambda s: broker.customer_app.set_location(
                    s, customer_id, vin, collection=collection, sharing=sharing, now=now
                )
            )
        except NotFound as error:
            raise NotYours(error.detail) from None
        except NotPermitted as error:
            raise OwnerOnly(error.detail) from None
        raise web.HTTPSeeOther(location="/vehicles?saved=1")

    async def export(request: web.Request) -> web.StreamResponse:
        broker = runtime()
        body = await use(request, broker.customer_app.export, write=True)  # audited
        return export_response(body, broker.clock.now().date().isoformat())

    pages: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]], str]] = [
        ("GET", "/grants", overview, "My data sharing: every grant per vehicle"),
        ("GET", "/grants/{grant_id}", grant_page, "One grant and its transfer history"),
        (
            "GET",
            "/grants/{grant_id}/end",
            confirm,
            "Confirm withdrawal of, or objection to, a grant",
        ),
        ("GET", "/vehicles", vehicles, "My vehicles: location collection and sharing"),
    ]
    for method, path, handler, summary in pages:
        params = [_GRANT_ID] if "{grant_id}" in path else []
        if path == "/grants/{grant_id}":
            params.append(query("page", {"type": "integer", "minimum": 1}, "Transfers page."))
        if path.endswith("/end"):
            params.append(
                query("action", {"enum": sorted(_ACTIONS)}, "What to confirm.", required=True)
            )
        route(
            app,
            method,
            path,
            handler,
            summary=summary,
            tag=TAG,
            security=SESSION,
            parameters=params,
            responses={200: html("The page."), 303: _LOGIN, 404: _NOT_FOUND},
        )
    route(
        app,
        "POST",
        "/grants/{grant_id}/end",
        end,
        summary="End a grant now, on every channel (after the confirmation page)",
        tag=TAG,
        security=SESSION,
        parameters=[_GRANT_ID],
        request_body=form_body(
            {"csrf_token": {"type": "string"}, "action": {"enum": sorted(_ACTIONS)}},
            required=["csrf_token", "action"],
        ),
        responses={
            303: redirect("Done: back to the grant's page."),
            403: _CSRF,
            404: _NOT_FOUND,
            409: html("The grant cannot be ended this way."),
        },
    )
    route(
        app,
        "POST",
        "/vehicles/{vin}/location",
        location,
        summary="Switch a vehicle's location collection and sharing",
        tag=TAG,
        security=SESSION,
        parameters=[_VIN],
        request_body=form_body(
            {
                "csrf_token": {"type": "string"},
                "collection": {"const": "on"},
                "sharing": {"const": "on"},
            },
            required=["csrf_token"],
        ),
        responses={
            303: redirect("Saved: back to the vehicles page."),
            403: _CSRF,
            404: _NOT_FOUND,
        },
    )
    route(
        app,
        "GET",
        "/export",
        export,
        summary="Download a copy of my data (GDPR Art. 15 and 20) as a JSON attachment",
        tag=TAG,
        security=SESSION,
        responses={
            200: {
                "description": "The copy.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            303: _LOGIN,
        },
    )


def _page_number(request: web.Request) -> int:
    value = request.query.get("page", "1")  # a bad page link shows the first page
    digits = value.isascii() and value.isdigit()
    return int(value) if digits and 0 < int(value) < 1_000_000 else 1


def _text(fields: FormFields, name: str) -> str:
    value = fields.get(name)
    return value if isinstance(value, str) else ""
