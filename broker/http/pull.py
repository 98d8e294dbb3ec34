"""The recipient pull API (``/v1/recipient/...``): insurers, dealers and authorities.

- ``GET /v1/recipient/vehicles``: the vehicles the token covers, as the
  contract's identifiers for them (VIN, pseudonym, or the grant for ``none``);
- ``GET /v1/recipient/vehicles/{vehicle}/records``: data per vehicle, category
  and time range, cursor-paginated; every answer is one gate decision and one
  audit entry (a refusal too);
- ``GET /v1/recipient/notices`` and ``POST .../notices/{id}/acknowledgement``:
  the notices feed of ended grants (erase the data), acknowledged and audited;
- ``POST /v1/recipient/eligibility``: which categories a vehicle's model can
  provide before its owner signs up (categories only, audited; never for an
  anonymised contract);
- ``GET /v1/recipient/exports/{contract}``: a periodic export of a population
  (the OBFCM report), for contracts with the ``export`` channel.

Rate limits are per contract (its ``rate_limit``), counted in the database so
every process shares them: 429 with ``Retry-After``; eligibility answers also
count against the recipient's daily quota (``Settings.eligibility_quota``). A
contract that requires DPoP refuses bearer tokens. Errors are RFC 9457 problem
details; a vehicle the caller may not see is answered exactly like one that does
not exist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from broker.clock import Clock, format_instant, parse_instant
from broker.documents import DocumentLibrary
from broker.domain.contracts import Channel, Contract, VehicleIdentifier
from broker.domain.grants import Grant
from broker.errors import BadRequest, BrokerError
from broker.gate import notices as notice_store
from broker.gate.gate import IDENTIFIED_ELSEWHERE, Gate
from broker.gate.keyring import Keyring
from broker.gate.listing import (
    SENDER_CONSTRAINT,
    ListingRequest,
    ListingView,
    handle_for,
    verify_listing,
)
from broker.gate.release import (
    Denial,
    Eligibility,
    PopulationTarget,
    Release,
    ReleaseRequest,
    VehicleTarget,
    verify_release,
)
from broker.http import openapi as doc
from broker.http.oauth import (
    InsufficientScope,
    TokenContext,
    TokenRefused,
    challenge,
    require_token,
)
from broker.oauth.server import BrokerAuthorizationServer, TokenKind
from broker.protection.sealing import Sealer, UnsealError, associated_data
from broker.settings import Settings
from broker.store import contracts as contract_store
from broker.store import grants as grant_store
from broker.store import rate_limits
from broker.store.database import Database
from broker.store.tables import NoticeRow

DEFAULT_LIMIT = 500
MAX_LIMIT = 5_000
DEFAULT_RANGE = timedelta(days=1)
ELIGIBILITY_SCHEMA = "urn:vehicle-data-broker:schema:eligibility-request"


class PullRuntime(Protocol):
    database: Database
    clock: Clock
    oauth: BrokerAuthorizationServer
    gate: Gate
    keyring: Keyring
    documents: DocumentLibrary
    settings: Settings


class VehicleNotFound(BrokerError):
    code = "vehicle_not_found"
    status = 404
    title = "Vehicle not found"


class ReleaseDenied(BrokerError):
    code = "release_denied"
    status = 403
    title = "Release denied"


class RateLimited(BrokerError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


class NoticeNotFound(BrokerError):
    code = "notice_not_found"
    status = 404
    title = "Notice not found"


_STATUS_EXCEPTIONS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    429: web.HTTPTooManyRequests,
}


def refusal(error: BrokerError, headers: dict[str, str] | None = None) -> web.HTTPException:
    """``error`` as a problem-details HTTP exception carrying ``headers``."""
    exception = _STATUS_EXCEPTIONS[error.status]
    return exception(
        text=json.dumps(error.problem()),
        content_type="application/problem+json",
        headers=headers,
    )


# -- what a token covers --------------------------------------------------------------------


@dataclass(frozen=True)
class Covered:
    """One vehicle a token covers under one contract."""

    grant: Grant
    contract: Contract
    handle: str  # what the recipient calls the vehicle


def add_routes(app: web.Application, *, runtime: Callable[[], PullRuntime]) -> None:
    async def token_for(request: web.Request, scopes: Iterable[str] = ()) -> TokenContext:
        broker = runtime()
        return await require_token(request, broker.oauth, api="recipient", scopes=scopes)

    async def covered(broker: PullRuntime, token: TokenContext) -> list[Covered]:
        """The active pull grants the token covers, with their latest contract."""
        now = broker.clock.now()
        named = list(token.grant_ids) if token.kind is TokenKind.RECIPIENT_CUSTOMER else None
        recipient = token.recipient_id or ""

        def load(session: Any) -> list[Covered]:
            found = []
            for grant in grant_store.covered_by(session, recipient, named):
                contract = contract_store.latest(session, grant.contract_id)
                if contract is None or Channel.PULL not in contract.channels:
                    continue
                if not grant.is_active(now):
                    continue
                handle = handle_for(grant, contract, broker.keyring)
                found.append(Covered(grant, contract, handle))
            return found

        return await broker.database.read(load)

    async def vehicles(request: web.Request) -> web.Response:
        broker = runtime()
        token = await token_for(request)
        return await listing_response(broker.gate, token, ListingView.VEHICLES)

    async def records(request: web.Request) -> web.Response:
        broker = runtime()
        token = await token_for(request)
        handle = request.match_info["vehicle"]
        query = _RecordQuery.parse(request, broker.clock.now())
        found = await covered(broker, token)
        contract = await _pull_contract(broker, token, query.contract, found)
        _require_sender_constraint(contract, token)
        categories = query.categories or frozenset(
            c for c in contract.category_ids if f"{c}:read" in token.scopes
        )
        # Categories outside the contract go on to the gate, which refuses (and audits) them.
        missing = sorted(
            c for c in categories & contract.category_ids if f"{c}:read" not in token.scopes
        )
        if missing:
            raise challenge(
                InsufficientScope(f"the token lacks the scope {missing[0]}:read"),
                error="insufficient_scope",
                scope=" ".join(f"{c}:read" for c in sorted(categories)),
                dpop=token.dpop_jkt is not None,
            )
        vin, customer = _resolve(token, contract, handle, found)
        await _count_request(broker, contract)
        seal = _CursorSeal(broker.keyring.sealer, token.recipient_id or "", contract.id)
        after = query.cursor_position(seal, handle, categories)
        outcome = await broker.gate.release(
            ReleaseRequest(
                recipient_id=token.recipient_id or "",
                contract_id=contract.id,
                channel=Channel.PULL,
                purpose=contract.purpose.code,
                target=VehicleTarget(vin),
                categories=categories,
                since=query.since,
                until=query.until,
                after=after,
                limit=query.limit,
                customer_id=customer,
                within_grant=True,
            )
        )
        if isinstance(outcome, Denial):
            raise refusal(_denial_problem(outcome))
        release = verify_release(outcome)
        next_cursor = (
            query.cursor_for(seal, release.next_after, handle, categories)
            if release.next_after is not None
            else None
        )
        body = {
            "vehicle": handle,
            "contract": contract.id,
            "protection": release.payload.level.value,
            # The range read, at the contract's time precision (it may be wider than asked).
            "since": format_instant(release.since or query.since),
            "until": format_instant(release.until or query.until),
            "records": list(release.payload.records),
            "withheld": [_withheld(w) for w in release.withheld],
            "next_cursor": next_cursor,
            "release": {"audit_seq": release.audit_seq, "digest": release.digest},
        }
        headers = {}
        if next_cursor is not None:
            headers["Link"] = f'<{request.path}?{_next_query(request, next_cursor)}>; rel="next"'
        return web.json_response(body, headers=headers, dumps=_dumps)

    async def notices(request: web.Request) -> web.Response:
        broker = runtime()
        token = await token_for(request)
        status = request.query.get("status", "pending")
        if status not in ("pending", "all"):
            raise BadRequest("status is pending or all")
        limit = _int_param(request, "limit", 100, 1, 1000)
        recipient = token.recipient_id or ""
        notice_seal = _CursorSeal(broker.keyring.sealer, recipient, "notices")
        after = _notice_cursor(notice_seal, request.query.get("cursor"))
        named = frozenset(token.grant_ids) if token.kind is TokenKind.RECIPIENT_CUSTOMER else None
        now = broker.clock.now()

        def read(session: Any) -> notice_store.FeedPage:
            # The written exception: read (and audited) even while the recipient is suspended.
            return notice_store.read_feed(
                session, recipient, pending_only=status == "pending", after=after,
                limit=limit, grant_ids=named, adequacy=broker.gate.adequacy, now=now,
            )  # fmt: skip

        page = await broker.database.write(read)
        rows = page.rows
        next_cursor = (
            notice_seal.seal({"a": format_instant(rows[-1].created_at), "i": rows[-1].id}, "")
            if len(rows) == limit
            else None
        )
        body: dict[str, Any] = {"notices": list(page.notices), "next_cursor": next_cursor}
        if page.audit_seq is not None:
            body["release"] = {"audit_seq": page.audit_seq, "digest": page.digest}
        return web.json_response(body)

    async def acknowledge(request: web.Request) -> web.Response:
        broker = runtime()
        token = await token_for(request)
        notice_id = request.match_info["notice"]
        recipient = token.recipient_id or ""
        now = broker.clock.now()
        named = set(token.grant_ids) if token.kind is TokenKind.RECIPIENT_CUSTOMER else None

        def ack(session: Any) -> NoticeRow | None:
            found = notice_store.acknowledge(
                session, recipient, notice_id, by=token.client_id, at=now,
                adequacy=broker.gate.adequacy,
            )  # fmt: skip
            if found is not None and named is not None and found.grant_id not in named:
                raise NoticeNotFound("no such notice for this recipient")
            return found

        notice = await broker.database.write(ack)
        if notice is None:
            raise refusal(NoticeNotFound("no such notice for this recipient"))
        return web.json_response(notice_store.acknowledgement(notice))

    async def eligibility(request: web.Request) -> web.Response:
        broker = runtime()
        token = await token_for(request)
        if token.kind is not TokenKind.RECIPIENT:
            raise refusal(
                ReleaseDenied(
                    "eligibility is asked with the recipient's own token (client credentials)"
                )
            )
        body = await _json_body(request, broker.documents, ELIGIBILITY_SCHEMA)
        contract = await _contract_of(broker, token.recipient_id or "", body["contract"])
        _require_sender_constraint(contract, token)
        await _count_request(broker, contract)
        await _count_eligibility(broker, token.recipient_id or "")
        outcome = await broker.gate.eligibility(
            token.recipient_id or "",
            contract.id,
            str(body["vin"]).strip().upper(),
            models=broker.documents.vehicle_models,
        )
        if isinstance(outcome, Denial):
            raise refusal(_denial_problem(outcome))
        assert isinstance(outcome, Eligibility)
        return web.json_response(outcome.document)

    async def export(request: web.Request) -> web.Response:
        broker = runtime()
        token = await token_for(request)
        if token.kind is not TokenKind.RECIPIENT:
            raise refusal(ReleaseDenied("exports are fetched with the recipient's own token"))
        contract = await _contract_of(
            broker, token.recipient_id or "", request.match_info["contract"]
        )
        if Channel.EXPORT not in contract.channels:
            raise refusal(ReleaseDenied("this contract has no export channel"))
        _require_sender_constraint(contract, token)
        now = broker.clock.now()
        until = _instant_param(request, "until", now)
        since = _instant_param(request, "since", until - timedelta(days=31))
        if since >= until:
            raise BadRequest("since must be before until")
        await _count_request(broker, contract)
        outcome = await broker.gate.release(
            ReleaseRequest(
                recipient_id=token.recipient_id or "",
                contract_id=contract.id,
                channel=Channel.EXPORT,
                purpose=contract.purpose.code,
                target=PopulationTarget(),
                categories=contract.category_ids,
                since=since,
                until=until,
            )
        )
        if isinstance(outcome, Denial):
            raise refusal(_denial_problem(outcome))
        release = verify_release(outcome)
        return web.json_response(export_document(release, contract), dumps=_dumps)

    # -- shared steps -------------------------------------------------------------------

    async def _pull_contract(
        broker: PullRuntime, token: TokenContext, wanted: str | None, found: list[Covered]
    ) -> Contract:
        if token.kind is TokenKind.RECIPIENT_CUSTOMER:
            contracts = {c.contract.id: c.contract for c in found}
        else:
            contracts = await broker.database.read(
                lambda s: {
                    c.id: c
                    for c in contract_store.all_latest(s)
                    if c.recipient == token.recipient_id and Channel.PULL in c.channels
                }
            )
        if wanted is not None:
            if wanted not in contracts:
                raise refusal(ReleaseDenied("no pull contract of this recipient by that id"))
            return contracts[wanted]
        if len(contracts) != 1:
            raise BadRequest(
                "name the contract (contract=...): the token covers "
                f"{len(contracts)} pull contracts"
            )
        return next(iter(contracts.values()))

    async def _contract_of(broker: PullRuntime, recipient: str, contract_id: str) -> Contract:
        contract = await broker.database.read(lambda s: contract_store.latest(s, contract_id))
        if contract is None or contract.recipient != recipient:
            raise refusal(ReleaseDenied("no contract of this recipient by that id"))
        return contract

    def _resolve(
        token: TokenContext, contract: Contract, handle: str, found: list[Covered]
    ) -> tuple[str, str | None]:
        """The VIN the handle names among the vehicles this token covers, and (for a
        customer-bound token) that grant's customer. A handle that names nothing the
        token covers resolves to no vehicle: the gate then refuses (and audits) it
        exactly as it refuses an unknown one."""
        if token.kind is not TokenKind.RECIPIENT_CUSTOMER and (
            contract.vehicle_identifier is VehicleIdentifier.VIN
        ):
            return handle.strip().upper(), None  # a VIN the recipient supplies (dealers)
        match = next(
            (c for c in found if c.contract.id == contract.id and c.handle == handle), None
        )
        if match is None:
            return "", None
        return match.grant.vin, match.grant.customer_id

    async def _count_request(broker: PullRuntime, contract: Contract) -> None:
        limit = contract.rate_limit
        per = timedelta(seconds=float(limit.per.nominal_seconds))
        now = broker.clock.now()
        retry = await broker.database.write(
            lambda s: rate_limits.take(
                s, f"contract:{contract.id}", limit=limit.requests, per=per, now=now
            )
        )
        if retry is not None:
            raise refusal(
                RateLimited(
                    f"the contract allows {limit.requests} requests per {limit.per}; "
                    f"retry in {retry} s"
                ),
                headers={"Retry-After": str(retry)},
            )

    async def _count_eligibility(broker: PullRuntime, recipient: str) -> None:
        """The recipient's daily eligibility quota, apart from any contract's rate limit:
        answering VIN after VIN would map which vehicles of a model exist nowhere else."""
        quota = broker.settings.eligibility_quota
        now = broker.clock.now()
        retry = await broker.database.write(
            lambda s: rate_limits.take(
                s, f"eligibility:{recipient}", limit=quota, per=timedelta(days=1), now=now
            )
        )
        if retry is not None:
            raise refusal(
                RateLimited(
                    f"a recipient may ask {quota} eligibility questions a day; retry in {retry} s"
                ),
                headers={"Retry-After": str(retry)},
            )

    vehicle = doc.path_param(
        "vehicle",
        {"type": "string", "maxLength": 128},
        "The vehicle as the contract identifies it (VIN, pseudonym, or grant id).",
    )
    security: list[tuple[str, list[str]]] = [("recipient", [])]
    errors = {
        **doc.BEARER_ERRORS,
        400: doc.problem("Malformed parameters."),
        429: doc.problem("The contract's rate limit is exceeded (see Retry-After)."),
    }
    doc.route(
        app,
        "GET",
        "/v1/recipient/vehicles",
        vehicles,
        summary="The vehicles this token covers",
        tag="recipient",
        security=security,
        responses={200: doc.json_content(_VEHICLES, "The covered vehicles."), **errors},
    )
    doc.route(
        app,
        "GET",
        "/v1/recipient/vehicles/{vehicle}/records",
        records,
        summary="A vehicle's data per category and time range, paginated",
        tag="recipient",
        security=security,
        parameters=[
            vehicle,
            doc.query(
                "category",
                {"type": "string"},
                "A category (repeat for several); default: every category the token may read.",
            ),
            doc.query("since", {"type": "string", "format": "date-time"}, "Start (inclusive)."),
            doc.query("until", {"type": "string", "format": "date-time"}, "End (exclusive)."),
            doc.query(
                "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "Page size."
            ),
            doc.query("cursor", {"type": "string"}, "next_cursor of the previous page."),
            doc.query("contract", {"type": "string"}, "The contract, if the token has several."),
            doc.header("DPoP", "A DPoP proof, for DPoP-bound tokens."),
        ],
        responses={
            200: doc.json_content(_RECORDS, "One release: protected records, one audit entry."),
            404: doc.problem("No such vehicle among those the token covers."),
            **errors,
        },
    )
    doc.route(
        app,
        "GET",
        "/v1/recipient/notices",
        notices,
        summary="Notices: grants that ended, whose data must be erased",
        tag="recipient",
        security=security,
        parameters=[
            doc.query("status", {"enum": ["pending", "all"]}, "pending (default) or all."),
            doc.query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size."),
            doc.query("cursor", {"type": "string"}, "next_cursor of the previous page."),
        ],
        responses={200: doc.json_content(_NOTICES, "The notices, oldest first."), **errors},
    )
    doc.route(
        app,
        "POST",
        "/v1/recipient/notices/{notice}/acknowledgement",
        acknowledge,
        summary="Confirm that a notice's data was erased (audited)",
        tag="recipient",
        security=security,
        parameters=[doc.path_param("notice", {"type": "string"}, "The notice's id.")],
        responses={
            200: doc.json_content(
                _ACKNOWLEDGEMENT, "The notice's id and when it was acknowledged (names no one)."
            ),
            404: doc.problem("No such notice for this recipient."),
            **errors,
        },
    )
    doc.route(
        app,
        "POST",
        "/v1/recipient/eligibility",
        eligibility,
        summary="Which categories a vehicle can provide (no data), before sign-up",
        description=(
            "The contract's categories that the VIN's model can provide by its standard "
            "equipment (contracts/vehicle-models.json: the maker from the WMI, the model "
            "from the model code). Never from stored data or the owner's settings: a VIN "
            "the broker stores is answered exactly like an unknown one of the same model, "
            "and an unknown or undecodable VIN like a model that provides nothing "
            "(eligible: false). Every answer and every refusal is one audit entry "
            "(kind eligibility)."
        ),
        tag="recipient",
        security=security,
        request_body=doc.json_body(doc.schema_ref(ELIGIBILITY_SCHEMA)),
        responses={
            200: doc.json_content(_ELIGIBILITY, "The categories (audited)."),
            422: doc.problem("The body does not match the schema."),
            **errors,
            403: doc.problem(
                "Refused (audited): not the recipient's own token or contract, the contract "
                "not in force, no transfer mechanism for a destination country, or an "
                "anonymised contract, whose recipient learns nothing about a single vehicle."
            ),
            429: doc.problem(
                "The contract's rate limit or the recipient's daily eligibility quota "
                "(BROKER_ELIGIBILITY_QUOTA, default 100) is exceeded (see Retry-After)."
            ),
        },
    )
    doc.route(
        app,
        "GET",
        "/v1/recipient/exports/{contract}",
        export,
        summary="A periodic export of a population (e.g. the OBFCM report)",
        tag="recipient",
        security=security,
        parameters=[
            doc.path_param("contract", {"type": "string"}, "A contract with the export channel."),
            doc.query("since", {"type": "string", "format": "date-time"}, "Period start."),
            doc.query("until", {"type": "string", "format": "date-time"}, "Period end."),
        ],
        responses={200: doc.json_content(_EXPORT, "The export (one audit entry)."), **errors},
    )


async def listing_response(gate: Gate, token: TokenContext, view: ListingView) -> web.Response:
    """A listing of what ``token`` covers, decided and audited by the gate.

    Refused as a records pull would be: 401 with a DPoP challenge when only the
    token's binding is missing, else 403 with the gate's reasons."""
    named = token.grant_ids if token.kind is TokenKind.RECIPIENT_CUSTOMER else None
    outcome = await gate.listing(
        ListingRequest(
            recipient_id=token.recipient_id or "",
            view=view,
            channel=Channel.PULL,
            grant_ids=tuple(named) if named is not None else None,
            sender_constrained=token.dpop_jkt is not None,
        )
    )
    if isinstance(outcome, Denial):
        if all(code == SENDER_CONSTRAINT for code in outcome.codes):
            raise challenge(
                TokenRefused("this contract requires DPoP-bound tokens (RFC 9449)"),
                error="invalid_token",
                dpop=True,
            )
        raise refusal(_denial_problem(outcome))
    listing = verify_listing(outcome)
    body: dict[str, Any] = dict(listing.document)
    if listing.withheld:
        body["withheld"] = [{"code": r.code, "message": r.message} for r in listing.withheld]
    if listing.audit_seq is not None:
        body["release"] = {"audit_seq": listing.audit_seq, "digest": listing.digest}
    return web.json_response(body, dumps=_dumps)


def export_document(release: Release, contract: Contract) -> dict[str, Any]:
    """The export file: the released records per vehicle, and what was skipped and why."""
    skipped: dict[str, int] = {}
    for withheld in release.withheld:
        skipped[withheld.reason.code] = skipped.get(withheld.reason.code, 0) + 1
    return {
        "contract": contract.id,
        "contract_version": contract.version,
        "legal_basis": contract.legal_basis.value,
        "since": format_instant(release.since or release.request.since),
        "until": format_instant(release.until or release.request.until),
        "vehicles": len(release.vehicle_refs),
        "records": list(release.payload.records),
        "skipped": skipped,
        "release": {"audit_seq": release.audit_seq, "digest": release.digest},
    }


# -- parameters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _RecordQuery:
    categories: frozenset[str]
    since: datetime
    until: datetime
    limit: int
    cursor: str | None
    contract: str | None

    @classmethod
    def parse(cls, request: web.Request, now: datetime) -> _RecordQuery:
        until = _instant_param(request, "until", now)
        since = _instant_param(request, "since", until - DEFAULT_RANGE)
        if since >= until:
            raise BadRequest("since must be before until")
        categories = frozenset(request.query.getall("category", []))
        if any(not c or len(c) > 64 for c in categories):
            raise BadRequest("a category is a catalogue id such as vehicle.status")
        return cls(
            categories=categories,
            since=since,
            until=until,
            limit=_int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            cursor=request.query.get("cursor"),
            contract=request.query.get("contract"),
        )

    def _binding(self, handle: str, categories: frozenset[str]) -> str:
        """The query a cursor belongs to (the recipient and contract are bound apart)."""
        parts = (handle, ",".join(sorted(categories)))
        text = "|".join((*parts, format_instant(self.since), format_instant(self.until)))
        return hashlib.sha256(text.encode()).hexdigest()

    def cursor_position(
        self, seal: _CursorSeal, handle: str, categories: frozenset[str]
    ) -> tuple[datetime, str] | None:
        if self.cursor is None:
            return None
        return _position(seal.open(self.cursor, self._binding(handle, categories)))

    def cursor_for(
        self,
        seal: _CursorSeal,
        position: tuple[datetime, str],
        handle: str,
        categories: frozenset[str],
    ) -> str:
        at, record_id = position
        content = {"a": format_instant(at), "i": record_id}
        return seal.seal(content, self._binding(handle, categories))


@dataclass(frozen=True)
class _CursorSeal:
    """Cursors sealed for one recipient and contract (or feed): see
    :mod:`broker.protection.sealing`. A cursor is opaque (no record id, VIN or exact
    time can be read from it), cannot be forged or altered, and is refused when shown
    by another recipient, under another contract or for another query."""

    sealer: Sealer
    recipient: str
    scope: str  # the contract id, or "notices"

    def _aad(self, binding: str) -> bytes:
        return associated_data("cursor", (self.recipient, self.scope, binding))

    def seal(self, content: dict[str, Any], binding: str) -> str:
        return self.sealer.seal(content, self._aad(binding))

    def open(self, cursor: str, binding: str) -> dict[str, Any]:
        try:
            return self.sealer.open(cursor, self._aad(binding))
        except UnsealError as exc:
            raise BadRequest(
                "the cursor is not one this API issued to you for this query: "
                "pass next_cursor unchanged, with the parameters of the request that gave it"
            ) from exc


def _position(data: dict[str, Any]) -> tuple[datetime, str]:
    try:
        return parse_instant(str(data["a"])), str(data["i"])
    except (KeyError, ValueError) as exc:
        raise BadRequest("the cursor is not one this API issued") from exc


def _instant_param(request: web.Request, name: str, default: datetime) -> datetime:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise BadRequest(f"{name} is not an RFC 3339 instant with a time zone") from exc


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _notice_cursor(seal: _CursorSeal, cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    return _position(seal.open(cursor, ""))


def _next_query(request: web.Request, cursor: str) -> str:
    pairs = [(k, v) for k, v in request.query.items() if k != "cursor"]
    return urlencode([*pairs, ("cursor", cursor)])


async def _json_body(request: web.Request, documents: DocumentLibrary, schema: str) -> Any:
    if request.content_type != "application/json":
        raise BadRequest("send application/json")
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest("the body is not valid JSON") from exc
    errors = documents.schemas.errors(schema, body)
    if errors:
        raise InvalidBody(
            "the body does not match the schema",
            errors=[e.as_dict() for e in errors],
        )
    return body


class InvalidBody(BrokerError):
    code = "invalid_body"
    status = 422
    title = "Invalid request body"


def _require_sender_constraint(contract: Contract, token: TokenContext) -> None:
    if contract.sender_constraint == "dpop" and token.dpop_jkt is None:
        raise challenge(
            TokenRefused("this contract requires DPoP-bound tokens (RFC 9449)"),
            error="invalid_token",
            dpop=True,
        )


# A vehicle the recipient receives identified elsewhere looks like one without a grant:
# saying so would link the pseudonym it asked for to one of its VINs.
_NOT_FOUND_CODES = frozenset({"no_grant", IDENTIFIED_ELSEWHERE})


def _denial_problem(denial: Denial) -> BrokerError:
    codes = denial.codes
    if codes and all(code in _NOT_FOUND_CODES for code in codes):
        return VehicleNotFound("no vehicle with this identifier is covered by your grants")
    reasons = [
        {"code": r.code, "message": r.message, **({"category": r.category} if r.category else {})}
        for r in denial.reasons
        if r.code not in _NOT_FOUND_CODES
    ]
    detail = "; ".join(r.text() for r in denial.reasons if r.code not in _NOT_FOUND_CODES)
    return ReleaseDenied(detail or "nothing may be released", reasons=reasons)


def _withheld(withheld: Any) -> dict[str, Any]:
    reason = withheld.reason
    out: dict[str, Any] = {"code": reason.code, "message": reason.message}
    if reason.category:
        out["category"] = reason.category
    if reason.count:
        out["count"] = reason.count
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- response schemas (documentation) -------------------------------------------------------

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_LISTING_EXTRAS: dict[str, Any] = {
    "withheld": {
        "type": "array",
        "description": "Why some grants are not listed (no handle is named for them).",
        "items": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
    },
    "release": {
        "type": "object",
        "description": "The listing's audit entry (absent when it names nothing).",
        "properties": {"audit_seq": {"type": "integer"}, "digest": {"type": "string"}},
    },
}
_VEHICLES = {
    "type": "object",
    "required": ["vehicles"],
    "properties": {
        **_LISTING_EXTRAS,
        "vehicles": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "vehicle": _STRING,
                    "contract": _STRING,
                    "grant": _STRING,
                    "categories": {"type": "array", "items": _STRING},
                    "since": _STRING,
                    "valid_until": _NULLABLE_STRING,
                    "location_precision": _NULLABLE_STRING,
                    "sender_constraint": _NULLABLE_STRING,
                },
            },
        },
    },
}
GRANTS_SCHEMA = {
    "type": "object",
    "required": ["grants"],
    "properties": {
        **_LISTING_EXTRAS,
        "grants": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "grant": _STRING,
                    "contract": _STRING,
                    "contract_version": {"type": "integer"},
                    "categories": {"type": "array", "items": _STRING},
                    "state": {"const": "active"},
                    "valid_from": _STRING,
                },
            },
        },
    },
}
_RECORDS = {
    "type": "object",
    "required": ["vehicle", "contract", "records", "next_cursor", "release"],
    "properties": {
        "vehicle": _STRING,
        "contract": _STRING,
        "protection": _STRING,
        "since": _STRING,
        "until": _STRING,
        "records": {"type": "array", "items": {"type": "object"}},
        "withheld": {"type": "array", "items": {"type": "object"}},
        "next_cursor": _NULLABLE_STRING,
        "release": {
            "type": "object",
            "properties": {"audit_seq": {"type": "integer"}, "digest": _STRING},
        },
    },
}
_NOTICE = {
    "type": "object",
    "properties": {
        "id": _STRING,
        "kind": _STRING,
        "grant": _STRING,
        "contract": _STRING,
        "vehicle": _NULLABLE_STRING,
        "reason": _STRING,
        "erase": {"type": "boolean"},
        "erase_by": _NULLABLE_STRING,
        "created_at": _STRING,
        "acknowledged_at": _NULLABLE_STRING,
    },
}
_ACKNOWLEDGEMENT = {
    "type": "object",
    "required": ["id", "acknowledged_at"],
    "properties": {"id": _STRING, "acknowledged_at": _STRING},
}
_NOTICES = {
    "type": "object",
    "properties": {
        "notices": {"type": "array", "items": _NOTICE},
        "next_cursor": _NULLABLE_STRING,
        "release": {
            "type": "object",
            "description": "The audit entry of this answer (absent when it names no one).",
            "properties": {"audit_seq": {"type": "integer"}, "digest": _STRING},
        },
    },
}
_ELIGIBILITY = {
    "type": "object",
    "properties": {
        "contract": _STRING,
        "eligible": {"type": "boolean"},
        "categories": {"type": "array", "items": _STRING},
    },
}
_EXPORT = {
    "type": "object",
    "properties": {
        "contract": _STRING,
        "legal_basis": _STRING,
        "since": _STRING,
        "until": _STRING,
        "vehicles": {"type": "integer"},
        "records": {"type": "array", "items": {"type": "object"}},
        "skipped": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}
