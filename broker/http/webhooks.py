"""``/v1/recipient/webhooks``: a fleet operator's webhook subscriptions (Standard Webhooks).

Recipient-wide tokens only (client credentials of a recipient's client): a
subscription belongs to the recipient, not to one customer's grants. Bodies are
JSON, at most :data:`MAX_BODY_BYTES`, validated against the
``webhook-*`` JSON Schemas; errors are RFC 9457 problem details listing each
error's JSON path. Another recipient's subscription id answers 404, exactly as
an unknown one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from broker.errors import BrokerError
from broker.http.bodies import read_json
from broker.http.oauth import require_token
from broker.http.openapi import (
    BEARER_ERRORS,
    json_body,
    json_content,
    path_param,
    problem,
    route,
    schema_ref,
)
from broker.oauth.server import BrokerAuthorizationServer, TokenKind
from broker.webhooks.subscriptions import (
    CREATE_SCHEMA,
    ROTATE_SCHEMA,
    UPDATE_SCHEMA,
    WebhookSubscriptions,
)

MAX_BODY_BYTES = 16 * 1024
TAG = "webhooks"
SECURITY: list[tuple[str, list[str]]] = [("recipient", [])]


class WebhookRuntime(Protocol):
    oauth: BrokerAuthorizationServer
    webhooks: WebhookSubscriptions


class RecipientWideTokenRequired(BrokerError):
    code = "recipient_wide_token_required"
    status = 403
    title = "A recipient-wide token is required"


_SUBSCRIPTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "description": {"type": "string"},
        "event_types": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": ["active", "disabled"]},
        "status_reason": {"type": ["string", "null"]},
        "previous_secret_valid_until": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "secret": {"type": "string", "description": "whsec_...; only in the answer that made it"},
    },
}
_ID = path_param("id", {"type": "string"}, "The subscription's id.")
_INVALID: dict[int | str, dict[str, Any]] = {
    400: problem("The body is not JSON."),
    413: problem(f"The body exceeds {MAX_BODY_BYTES} bytes."),
    422: problem("The body breaks its schema (each error with its JSON path), or the URL is "
                 "not allowed (not https, or a private, loopback or metadata address)."),
}  # fmt: skip
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem("No such subscription for this recipient.")
}


def add_routes(app: web.Application, *, runtime: Callable[[], WebhookRuntime]) -> None:
    def handler(
        work: Callable[[WebhookSubscriptions, str, web.Request], Awaitable[web.Response]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            broker = runtime()
            token = await require_token(request, broker.oauth, api="recipient")
            if token.kind is not TokenKind.RECIPIENT or not token.recipient_id:
                raise RecipientWideTokenRequired(
                    "webhook subscriptions need a client-credentials token of the recipient"
                )
            return await work(broker.webhooks, token.recipient_id, request)

        return handle

    async def create(hooks: WebhookSubscriptions, rid: str, r: web.Request) -> web.Response:
        return web.json_response(await hooks.create(rid, await _body(r)), status=201)

    async def listing(hooks: WebhookSubscriptions, rid: str, _r: web.Request) -> web.Response:
        return web.json_response({"webhooks": await hooks.listing(rid)})

    async def get(hooks: WebhookSubscriptions, rid: str, r: web.Request) -> web.Response:
        return web.json_response(await hooks.get(rid, r.match_info["id"]))

    async def update(hooks: WebhookSubscriptions, rid: str, r: web.Request) -> web.Response:
        return web.json_response(await hooks.update(rid, r.match_info["id"], await _body(r)))

    async def delete(hooks: WebhookSubscriptions, rid: str, r: web.Request) -> web.Response:
        await hooks.delete(rid, r.match_info["id"])
        return web.Response(status=204)

    async def rotate(hooks: WebhookSubscriptions, rid: str, r: web.Request) -> web.Response:
        body = await _body(r, optional=True)
        return web.json_response(await hooks.rotate(rid, r.match_info["id"], body))

    one = json_content(_SUBSCRIPTION, "The subscription.")
    base = "/v1/recipient/webhooks"
    route(
        app, "POST", base, handler(create), summary="Subscribe an endpoint to events",
        tag=TAG, security=SECURITY, request_body=json_body(schema_ref(CREATE_SCHEMA)),
        responses={
            201: json_content(_SUBSCRIPTION, "Created; the secret is shown this once."),
            **BEARER_ERRORS, **_INVALID,
        },
        description="The endpoint gets a signed verification ping (event type ping) at once.",
    )  # fmt: skip
    route(
        app, "GET", base, handler(listing), summary="The recipient's subscriptions", tag=TAG,
        security=SECURITY,
        responses={
            200: json_content(
                {"type": "object", "properties": {"webhooks": {"type": "array",
                 "items": _SUBSCRIPTION}}}, "Every subscription not deleted."),
            **BEARER_ERRORS,
        },
    )  # fmt: skip
    route(
        app, "GET", base + "/{id}", handler(get), summary="One subscription", tag=TAG,
        security=SECURITY, parameters=[_ID], responses={200: one, **BEARER_ERRORS, **_NOT_FOUND},
    )  # fmt: skip
    route(
        app, "PATCH", base + "/{id}", handler(update), summary="Change a subscription",
        tag=TAG, security=SECURITY, parameters=[_ID],
        request_body=json_body(schema_ref(UPDATE_SCHEMA)),
        responses={200: one, **BEARER_ERRORS, **_INVALID, **_NOT_FOUND},
    )  # fmt: skip
    route(
        app, "DELETE", base + "/{id}", handler(delete), summary="End a subscription", tag=TAG,
        security=SECURITY, parameters=[_ID],
        responses={204: {"description": "Ended; queued messages dropped."}, **BEARER_ERRORS,
                   **_NOT_FOUND},
    )  # fmt: skip
    route(
        app, "POST", base + "/{id}/secret", handler(rotate), summary="Rotate the signing secret",
        tag=TAG, security=SECURITY, parameters=[_ID],
        request_body=json_body(schema_ref(ROTATE_SCHEMA), required=False),
        responses={
            200: json_content(_SUBSCRIPTION, "The new secret (shown once); both sign until "
                              "previous_secret_valid_until."),
            **BEARER_ERRORS, **_INVALID, **_NOT_FOUND,
        },
    )  # fmt: skip


async def _body(request: web.Request, *, optional: bool = False) -> Any:
    return await read_json(
        request, max_bytes=MAX_BODY_BYTES, outcome="nothing was stored", optional=optional
    )
