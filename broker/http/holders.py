"""``POST /v1/holders/changes``: the car maker's backend reports who holds a vehicle.

A sale, the start or end of a driver period, a fleet join or leave, as a JSON body of
the ``holder-change`` schema, under the backend's idempotency key ``change_id``
(:mod:`broker.services.holders`). The first report answers 201 with what it did
(``ended_grants``: how many grants the change ended); a repeat answers 200 with the
same body and changes nothing; the same key with another change is 409. Errors are
RFC 9457 problem details; schema errors name the JSON path, never the value.

Only the car maker's backend may call it: an access token of its client (client
credentials, scope ``holders``) as an RFC 6750 bearer token; without the scope the
answer is 403 ``insufficient_scope``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from broker.clock import Clock
from broker.documents import DocumentLibrary
from broker.gate.keyring import Keyring
from broker.http import openapi as doc
from broker.http.bodies import read_json
from broker.http.oauth import require_token
from broker.oauth.scopes import HOLDERS
from broker.oauth.server import BrokerAuthorizationServer
from broker.services import holders
from broker.services.grants import GrantService
from broker.store.database import Database

PATH = "/v1/holders/changes"
MAX_BODY_BYTES = 4 * 1024


class HolderRuntime(Protocol):
    database: Database
    clock: Clock
    oauth: BrokerAuthorizationServer
    keyring: Keyring
    documents: DocumentLibrary
    grants: GrantService


def add_routes(app: web.Application, *, runtime: Callable[[], HolderRuntime]) -> None:
    async def report(request: web.Request) -> web.Response:
        broker = runtime()
        # Only the car maker's backend, with a client-credentials token of scope ``holders``.
        await require_token(request, broker.oauth, api="ingest", scopes=[HOLDERS])
        change = holders.HolderChange.parse(broker.documents, await _body(request))
        now = broker.clock.now()
        outcome = await broker.database.write(
            lambda s: holders.apply_change(
                s, change, grants=broker.grants, keyring=broker.keyring, now=now
            )
        )
        return web.json_response(outcome.result, status=201 if outcome.created else 200)

    doc.route(
        app,
        "POST",
        PATH,
        report,
        summary="A sale, a driver period or a fleet change, from the car maker's backend",
        description="Idempotent by change_id: a repeat answers 200 with the first answer and "
        "changes nothing; the same change_id with another change is 409. Every grant the "
        "change ends (the previous holders' consents, the fleet's clearances) ends at its "
        "instant; each applied change is one audit entry.",
        tag="ingest",
        security=[("ingest", [HOLDERS])],
        request_body=doc.json_body(doc.schema_ref(holders.SCHEMA)),
        responses={
            201: doc.json_content(_RESULT, "Applied."),
            200: doc.json_content(_RESULT, "Applied before: the first answer, nothing changed."),
            400: doc.problem("The body is not JSON."),
            **doc.BEARER_ERRORS,
            404: doc.problem("No such vehicle, customer, fleet operator, driver or membership."),
            409: doc.problem(
                "The change_id was used for another change, or the change "
                "contradicts the vehicle's holders (already the owner, already "
                "in the fleet, before the current period)."
            ),
            413: doc.problem(f"The body exceeds {MAX_BODY_BYTES} bytes."),
            422: doc.problem(
                "The body breaks its schema (each error with its JSON path), "
                "or the change lies in the future."
            ),
        },
    )


_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["change_id", "kind", "applied_at", "ended_grants"],
    "properties": {
        "change_id": {"type": "string"},
        "kind": {"enum": sorted(holders.KINDS)},
        "applied_at": {"type": "string", "format": "date-time"},
        "ended_grants": {"type": "integer", "minimum": 0},
    },
}


async def _body(request: web.Request) -> Any:
    return await read_json(request, max_bytes=MAX_BODY_BYTES, outcome="nothing was changed")
