"""``GET /v1/recipient/grants``: which grants a recipient's token covers.

It exists so that every cell of the authorization matrix can be exercised over
HTTP; the pull API builds on it. The answer names grants, so the gate decides
and audits it like the vehicles listing (:mod:`broker.gate.listing`). The
customer app's ``/v1/me`` API is in :mod:`broker.http.me`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from broker.gate.gate import Gate
from broker.gate.listing import ListingView
from broker.http.oauth import require_token
from broker.http.openapi import BEARER_ERRORS, json_content, problem, route
from broker.http.pull import GRANTS_SCHEMA, listing_response
from broker.oauth.server import BrokerAuthorizationServer


class ApiRuntime(Protocol):
    oauth: BrokerAuthorizationServer
    gate: Gate


def add_routes(app: web.Application, *, runtime: Callable[[], ApiRuntime]) -> None:
    async def recipient_grants(request: web.Request) -> web.Response:
        broker = runtime()
        token = await require_token(request, broker.oauth, api="recipient")
        return await listing_response(broker.gate, token, ListingView.GRANTS)

    route(
        app,
        "GET",
        "/v1/recipient/grants",
        recipient_grants,
        summary="The active grants the recipient's token covers (audited, like a release)",
        tag="recipient",
        security=[("recipient", [])],
        responses={
            200: json_content(GRANTS_SCHEMA, "The grants the token covers."),
            403: problem("Nothing may be named: the gate's reasons (audited)."),
            **BEARER_ERRORS,
        },
    )
