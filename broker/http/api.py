"""``GET /v1/recipient/grants``: which grants a recipient's token covers.

It exists so that every cell of the authorization matrix can be exercised over
HTTP; the pull API builds on it. The customer app's ``/v1/me`` API is in
:mod:`broker.http.me`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from broker.clock import Clock, format_instant
from broker.domain.grants import Grant
from broker.http.oauth import require_token
from broker.http.openapi import BEARER_ERRORS, json_content, route
from broker.oauth.server import BrokerAuthorizationServer, TokenKind
from broker.store import grants as grant_store
from broker.store.database import Database


class ApiRuntime(Protocol):
    database: Database
    clock: Clock
    oauth: BrokerAuthorizationServer


def add_routes(app: web.Application, *, runtime: Callable[[], ApiRuntime]) -> None:
    async def recipient_grants(request: web.Request) -> web.Response:
        broker = runtime()
        token = await require_token(request, broker.oauth, api="recipient")
        now = broker.clock.now()
        named = list(token.grant_ids) if token.kind is TokenKind.RECIPIENT_CUSTOMER else None
        recipient = token.recipient_id or ""
        grants = await broker.database.read(lambda s: grant_store.covered_by(s, recipient, named))
        return web.json_response(
            {"grants": [_describe(g, now) for g in grants if g.is_active(now)]}
        )

    route(
        app,
        "GET",
        "/v1/recipient/grants",
        recipient_grants,
        summary="The active grants the recipient's token covers",
        tag="recipient",
        security=[("recipient", [])],
        responses={
            200: json_content({"type": "object"}, "The grants the token covers."),
            **BEARER_ERRORS,
        },
    )


def _describe(grant: Grant, now: Any) -> dict[str, Any]:
    return {
        "grant": grant.id,
        "contract": grant.contract_id,
        "contract_version": grant.contract_version,
        "categories": sorted(grant.categories),
        "state": grant.effective_state(now).value,
        "valid_from": format_instant(grant.valid_from),
    }
