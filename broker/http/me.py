"""``/v1/me/...``: the customer app's JSON API, for tokens of the customer app's own client.

The same use cases as the customer pages (:mod:`broker.services.customer_app`):
every grant per vehicle, a grant's transfers (paginated), withdrawal and
objection (scope ``grants:write``), the location switches per vehicle, and a copy
of the customer's data (scope ``data:export``). A grant or vehicle that is not
the customer's answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from broker.clock import Clock
from broker.domain.grants import GrantAction
from broker.errors import BadRequest
from broker.http.oauth import require_token
from broker.http.openapi import (
    BEARER_ERRORS,
    json_body,
    json_content,
    path_param,
    problem,
    query,
    route,
)
from broker.oauth.server import BrokerAuthorizationServer
from broker.services.customer_app import MAX_PAGE_SIZE, CustomerApp
from broker.store import parties as party_store
from broker.store.database import Database

TAG = "customer app"
READ = [("customer", ["grants:read"])]
WRITE = [("customer", ["grants:write"])]
EXPORT = [("customer", ["data:export"])]
DATA = [("customer", ["data:read"])]
GRANT_ID = path_param("grant_id", {"type": "string", "maxLength": 64}, "The grant's id.")
VIN = path_param("vin", {"type": "string", "minLength": 17, "maxLength": 17}, "The vehicle's VIN.")
NOT_YOURS = problem("No such grant or vehicle of this customer (never says whether it exists).")
OBJECT = {"type": "object"}
LOCATION_BODY = {
    "type": "object",
    "required": ["collection", "sharing"],
    "additionalProperties": False,
    "properties": {"collection": {"type": "boolean"}, "sharing": {"type": "boolean"}},
}


class MeRuntime(Protocol):
    database: Database
    clock: Clock
    oauth: BrokerAuthorizationServer
    customer_app: CustomerApp


def add_routes(app: web.Application, *, runtime: Callable[[], MeRuntime]) -> None:
    async def customer(request: web.Request, scope: str | None) -> tuple[MeRuntime, str]:
        broker = runtime()
        scopes = [scope] if scope else []
        token = await require_token(request, broker.oauth, api="customer", scopes=scopes)
        return broker, token.subject

    async def me(request: web.Request) -> web.Response:
        broker, customer_id = await customer(request, None)
        found = await broker.database.read(lambda s: party_store.customer(s, customer_id))
        if found is None:
            raise web.HTTPNotFound()
        return web.json_response({"customer": found.id, "language": found.language.value})

    async def grants(request: web.Request) -> web.Response:
        broker, customer_id = await customer(request, "grants:read")
        now = broker.clock.now()
        body = await broker.database.read(
            lambda s: broker.customer_app.overview(s, customer_id, now)
        )
        return web.json_response(body)

    async def grant(request: web.Request) -> web.Response:
        broker, customer_id = await customer(request, "grants:read")
        grant_id, now = request.match_info["grant_id"], broker.clock.now()
        body = await broker.database.read(
            lambda s: broker.customer_app.grant(s, customer_id, grant_id, now)
        )
        return web.json_response(body)

    async def transfers(request: web.Request) -> web.Response:
        broker, customer_id = await customer(request, "grants:read")
        grant_id, now = request.match_info["grant_id"], broker.clock.now()
        page = _positive(request, "page", 1)
        per_page = _positive(request, "per_page", 20)
        result = await broker.database.read(
            lambda s: broker.customer_app.transfers(
                s, customer_id, grant_id, now, page=page, per_page=per_page
            )
        )
        return web.json_response(result.as_json())

    def ending(action: GrantAction) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            broker, customer_id = await customer(request, "grants:write")
            grant_id, now = request.match_info["grant_id"], broker.clock.now()
            body = await broker.database.write(
                lambda s: broker.customer_app.end_grant(s, customer_id, grant_id, action, now)
            )
            return web.json_response(body)

        return handle

    async def vehicles(request: web.Request) -> web.Response:
        broker, customer_id = await customer(request, "data:read")
        now = broker.clock.now()
        found = await broker.database.read(
            lambda s: broker.customer_app.vehicles(s, customer_id, now)
        )
        return web.json_response({"vehicles": found})

    async def location(request: web.Request) -> web.Response:
        broker, customer_id = await customer(request, "grants:write")
        vin, now = request.match_info["vin"], broker.clock.now()
        collection, sharing = await _location_body(request)
        body = await broker.database.write(
            lambda s: broker.customer_app.set_location(
                s, customer_id, vin, collection=collection, sharing=sharing, now=now
            )
        )
        return web.json_response(body)

    async def export(request: web.Request) -> web.Response:
        broker, customer_id = await customer(request, "data:export")
        now = broker.clock.now()
        body = await broker.database.write(  # the copy appends its audit entry
            lambda s: broker.customer_app.export(s, customer_id, now)
        )
        return export_response(body, now.date().isoformat())

    route(
        app,
        "GET",
        "/v1/me",
        me,
        summary="Who the customer app's token speaks for",
        tag=TAG,
        security=[("customer", [])],
        responses={200: json_content(OBJECT, "The customer and their language."), **BEARER_ERRORS},
    )
    route(
        app,
        "GET",
        "/v1/me/grants",
        grants,
        summary="Every grant per vehicle: active, pending and past",
        tag=TAG,
        security=READ,
        responses={200: json_content(OBJECT, "Vehicles with their grants."), **BEARER_ERRORS},
    )
    route(
        app,
        "GET",
        "/v1/me/grants/{grant_id}",
        grant,
        summary="One of the customer's grants",
        tag=TAG,
        security=READ,
        parameters=[GRANT_ID],
        responses={200: json_content(OBJECT, "The grant."), 404: NOT_YOURS, **BEARER_ERRORS},
    )
    route(
        app,
        "GET",
        "/v1/me/grants/{grant_id}/transfers",
        transfers,
        summary="The transfers under one grant, from the audit log, newest first",
        description="Everything that left under the grant, each item with its `kind` "
        "(`release`, `listing`, `event`, `notice`, `notice_feed`), destination countries "
        "and transfer mechanisms; a day's repeated listings or feed reads of one recipient "
        "are one item counting them (`occurrences`, from `first_seq` to `seq`).",
        tag=TAG,
        security=READ,
        parameters=[
            GRANT_ID,
            query("page", {"type": "integer", "minimum": 1}, "Page number (from 1)."),
            query(
                "per_page",
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                "Transfers per page (20 by default).",
            ),
        ],
        responses={
            200: json_content(OBJECT, "A page of transfers."),
            400: problem("A malformed page parameter."),
            404: NOT_YOURS,
            **BEARER_ERRORS,
        },
    )
    for action, name, summary in (
        (GrantAction.WITHDRAW, "withdrawal", "Withdraw consent (Art. 7(3)) or end the service"),
        (GrantAction.OBJECT, "objection", "Object to legitimate-interest processing (Art. 21)"),
    ):
        route(
            app,
            "POST",
            f"/v1/me/grants/{{grant_id}}/{name}",
            ending(action),
            summary=summary,
            description="Ends the grant at once on every channel: its tokens are refused, "
            "queued deliveries dropped, and the recipient gets a notice.",
            tag=TAG,
            security=WRITE,
            parameters=[GRANT_ID],
            responses={
                200: json_content(OBJECT, "The grant as it is now."),
                404: NOT_YOURS,
                409: problem("The grant cannot be ended this way (see detail)."),
                **BEARER_ERRORS,
            },
        )
    route(
        app,
        "GET",
        "/v1/me/vehicles",
        vehicles,
        summary="The vehicles the customer owns or drives, with their location switches",
        tag=TAG,
        security=DATA,
        responses={200: json_content(OBJECT, "The vehicles."), **BEARER_ERRORS},
    )
    route(
        app,
        "PUT",
        "/v1/me/vehicles/{vin}/location",
        location,
        summary="Switch location collection and sharing on or off for every channel",
        description="An owner may switch either on or off; a secondary driver only off.",
        tag=TAG,
        security=WRITE,
        parameters=[VIN],
        request_body=json_body(LOCATION_BODY),
        responses={
            200: json_content(OBJECT, "The vehicle with its switches."),
            400: problem("The body is not the switches as JSON booleans."),
            404: NOT_YOURS,
            **BEARER_ERRORS,
        },
    )
    route(
        app,
        "GET",
        "/v1/me/export",
        export,
        summary="A copy of the customer's data (GDPR Art. 15 and 20), as a JSON attachment",
        description="Every copy handed out is recorded in the audit log (`subject_access`). "
        "Its `transfers` list everything that left about the customer, of every `kind`: "
        "what left under their grants, and the eligibility answers about a vehicle they "
        "owned or drove at the time (`eligibility`).",
        tag=TAG,
        security=EXPORT,
        responses={
            200: json_content(
                OBJECT,
                "The copy: account, contact, vehicles, grants, "
                "transfers, recipients and stored telemetry.",
            ),
            **BEARER_ERRORS,
        },
    )


def export_response(body: dict[str, Any], day: str) -> web.Response:
    """The copy as a downloadable JSON attachment (never cached)."""
    return web.Response(
        body=json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8"),
        content_type="application/json",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="my-vehicle-data-{day}.json"',
            "Cache-Control": "no-store",
        },
    )


def _positive(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= 1_000_000:
        raise BadRequest(f"{name} is a positive integer")
    return int(value)


async def _location_body(request: web.Request) -> tuple[bool, bool]:
    if request.content_type != "application/json":
        raise BadRequest("send application/json")
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if (
        not isinstance(body, dict)
        or set(body) != {"collection", "sharing"}
        or not all(isinstance(v, bool) for v in body.values())
    ):
        raise BadRequest('send {"collection": true|false, "sharing": true|false}')
    return body["collection"], body["sharing"]
