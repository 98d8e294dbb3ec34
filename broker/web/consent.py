"""``/oauth/authorize``: the authorization endpoint and the consent page (RFC 6749 §4.1).

GET validates the request (client, exact redirect URI, PKCE S256, scope), asks
the customer to log in, and shows what they are asked to agree to: recipient,
purpose, legal basis, each data category (optional ones can be unticked),
protection, destination countries and transfer mechanism, retention, validity,
and, where the contract allows, precise or coarse location. POST (with the
session's CSRF token) approves — the grant is created, with the code, in one
transaction (while the customer's grant under the contract on that vehicle is open,
the approval amends it instead) — or declines, which creates nothing. This is also
how a customer shares data with a third party of their choice (EU Data Act Art. 5).

The customer app's own client gets its code without a consent page: its
tokens reach only the customer's own API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import OAuth2Error

from broker.clock import Clock
from broker.documents import DocumentLibrary
from broker.domain.contracts import Channel, Contract
from broker.domain.legal import Activation
from broker.http.middleware import FORM_ACTION_ORIGINS
from broker.http.openapi import form_body, html, query, redirect, route
from broker.oauth.server import BrokerAuthorizationServer, OAuthResponse, Principal, oauth_request
from broker.services.grants import GrantService
from broker.store import contracts as contract_store
from broker.store import parties as party_store
from broker.transfer.adequacy import AdequacyTable
from broker.transfer.check import check_transfer
from broker.web import PageError
from broker.web.csrf import read_session_form
from broker.web.render import render
from broker.web.sessions import require_session

#: The parameters of an authorization request that the consent form carries along.
REQUEST_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


class ConsentRuntime(Protocol):
    oauth: BrokerAuthorizationServer
    documents: DocumentLibrary
    adequacy: AdequacyTable
    grants: GrantService
    clock: Clock


class BadAuthorizationRequest(PageError):
    """A request that cannot be answered at the client's redirect URI (RFC 6749 §4.1.2.1)."""

    status = 400
    title_key = "authorize.bad_request_title"
    message_key = "authorize.bad_request_message"


@dataclass(frozen=True)
class Offer:
    """What the consent page shows for one contract."""

    contract: Contract
    categories: list[dict[str, Any]]
    countries: list[dict[str, Any]]
    vehicles: list[dict[str, str]]
    precisions: list[str]


def add_consent_routes(app: web.Application, *, runtime: Callable[[], ConsentRuntime]) -> None:
    async def authorize(request: web.Request) -> web.StreamResponse:
        broker = runtime()
        if request.method == "POST":
            form = await read_session_form(request)
            params = {k: str(form.fields.get(k, "")) for k in REQUEST_PARAMS if form.fields.get(k)}
            customer_id = form.session.customer.id
            fields = form.fields
        else:
            repeated = [k for k in REQUEST_PARAMS if len(request.query.getall(k, [])) > 1]
            if repeated:
                raise BadAuthorizationRequest(f"repeated parameter {repeated[0]}")
            params = {k: v for k, v in request.query.items() if k in REQUEST_PARAMS}
            fields = None
            customer_id = None
        url = _authorize_url(broker.oauth, params)
        client = await _validate(broker.oauth, url, params)
        session = await require_session(request)
        customer_id = customer_id or session.customer.id
        if client.row.kind == "customer_app":
            return await _answer(broker.oauth, url, params, Principal(customer_id))
        if fields is None:
            offer = await broker.oauth.database.read(
                lambda s: _offer(s, broker, client.row.recipient_id or "", params, customer_id)
            )
            if offer is None:
                return await _refuse(broker.oauth, url, params, "invalid_scope")
            # The answer redirects to the client: its origin must be a permitted form action.
            request[FORM_ACTION_ORIGINS] = (_origin(params.get("redirect_uri", "")),)
            return await render(
                request,
                "consent.html",
                offer=offer,
                recipient=await broker.oauth.database.read(
                    lambda s: party_store.recipient(s, offer.contract.recipient)
                ),
                params=params,
                purpose=_text(offer.contract.purpose.description, session.customer.language.value),
            )
        if fields.get("decision") != "approve":
            return await _answer(broker.oauth, url, params, None)  # declined: nothing created
        return await _approve(broker, url, params, customer_id, fields)

    names = ", ".join(REQUEST_PARAMS)
    route(
        app,
        "GET",
        "/oauth/authorize",
        authorize,
        summary="Authorization endpoint (RFC 6749 section 4.1): the consent page",
        description=f"Parameters: {names}. PKCE S256 is required for every client.",
        tag="oauth",
        security=[("session", [])],
        parameters=[
            query(name, {"type": "string"}, f"The authorization request's {name}.")
            for name in REQUEST_PARAMS
        ],
        responses={
            200: html("The consent page."),
            302: redirect("The answer (code or error) at the client's redirect URI."),
            303: redirect("Not logged in: to the login page, and back here afterwards."),
            400: html("A request that cannot be answered at the client's redirect URI."),
        },
    )
    route(
        app,
        "POST",
        "/oauth/authorize",
        authorize,
        summary="The consent page's answer: approve (the grant is created) or decline",
        tag="oauth",
        security=[("session", [])],
        request_body=form_body(
            {
                "csrf_token": {"type": "string"},
                "decision": {"enum": ["approve", "decline"]},
                "vehicle": {"type": "string"},
                "category": {"type": "array", "items": {"type": "string"}},
                "precision": {"enum": ["precise", "coarse"]},
                **{name: {"type": "string"} for name in REQUEST_PARAMS},
            },
            required=["csrf_token", "decision"],
        ),
        responses={
            302: redirect("The answer (code or access_denied) at the client's redirect URI."),
            400: html("A request that cannot be answered at the client's redirect URI."),
            403: html("The form came without its CSRF token, or from another site."),
        },
    )


def _authorize_url(server: BrokerAuthorizationServer, params: dict[str, str]) -> str:
    return f"{server.issuer}/oauth/authorize?{urlencode(params)}"


async def _validate(server: BrokerAuthorizationServer, url: str, params: dict[str, str]) -> Any:
    """The client, if the request is valid; else the error response or page."""

    def check() -> Any:
        request = oauth_request("GET", url, {}, params)
        try:
            grant = server.get_consent_grant(request=request, end_user=None)
        except OAuth2Error as error:
            return server.handle_error_response(request, error)
        return grant.client

    result = await server.run(check)
    if isinstance(result, OAuthResponse):
        location = result.location
        if location is None:
            raise BadAuthorizationRequest(str(result.body))
        raise web.HTTPFound(add_params_to_uri(location, [("iss", server.issuer)]))
    return result


async def _refuse(
    server: BrokerAuthorizationServer, url: str, params: dict[str, str], error: str
) -> web.StreamResponse:
    redirect = params.get("redirect_uri", "")
    query = [("error", error), ("iss", server.issuer)]
    if params.get("state"):
        query.append(("state", params["state"]))
    raise web.HTTPFound(add_params_to_uri(redirect, query))


async def _answer(
    server: BrokerAuthorizationServer,
    url: str,
    params: dict[str, str],
    principal: Principal | None,
    *,
    before: Callable[[], tuple[Principal, str]] | None = None,
) -> web.StreamResponse:
    """Issue the code (or the access_denied answer) at the client's redirect URI.

    ``before`` runs first in the same transaction (creating the grant) and says
    who the code is for and the scope it carries.
    """

    def respond() -> OAuthResponse:
        user, scope = before() if before is not None else (principal, None)
        data = dict(params) | ({"scope": scope} if scope is not None else {})
        request = oauth_request("GET", url, {}, data)
        grant = server.get_consent_grant(request=request, end_user=user)
        response: OAuthResponse = server.create_authorization_response(
            request=request, grant_user=user, grant=grant
        )
        return response

    response = await server.run(respond)
    location = response.location
    if location is None:
        raise BadAuthorizationRequest(str(response.body))
    raise web.HTTPFound(location)


async def _approve(
    broker: ConsentRuntime,
    url: str,
    params: dict[str, str],
    customer_id: str,
    fields: Any,
) -> web.StreamResponse:
    client_id = params.get("client_id", "")

    def create_grant() -> tuple[Principal, str]:
        session = broker.oauth.session()
        client = broker.oauth.query_client(client_id)
        assert client is not None
        offer = _offer(session, broker, client.row.recipient_id or "", params, customer_id)
        if offer is None:
            raise BadAuthorizationRequest("nothing to consent to")
        vin = str(fields.get("vehicle", ""))
        if vin not in {v["vin"] for v in offer.vehicles}:
            raise BadAuthorizationRequest("not one of your vehicles")
        chosen = [str(c) for c in fields.getall("category", [])]
        offered = {c["id"] for c in offer.categories}
        if not set(chosen) <= offered:
            raise BadAuthorizationRequest("a category the consent page did not offer")
        required = [c["id"] for c in offer.categories if not c["optional"]]
        categories = sorted(set(chosen) | set(required))
        precision = str(fields.get("precision") or "") or None
        # The customer's open grant under this contract on the vehicle is amended (the
        # token then names it, its id unchanged); else a new grant is created. A category
        # the page did not offer keeps its place in the grant.
        grant = broker.grants.approve(
            session,
            contract=offer.contract,
            vin=vin,
            customer_id=customer_id,
            categories=categories,
            location_precision=precision if "vehicle.position" in categories else None,
            at=broker.clock.now(),
            offered=offered,
        )
        catalogue = broker.documents.catalogue
        # The token's scope: what this page approved (an amended grant may cover more).
        approved = grant.categories & set(categories)
        scope = " ".join(sorted(catalogue.category(c).scope for c in approved))
        return Principal(customer_id, (grant.id,)), scope

    return await _answer(broker.oauth, url, params, None, before=create_grant)


def _offer(
    session: Any,
    broker: ConsentRuntime,
    recipient_id: str,
    params: dict[str, str],
    customer_id: str,
) -> Offer | None:
    now = broker.clock.now()
    catalogue = broker.documents.catalogue
    wanted = {
        category.id
        for scope in params.get("scope", "").split()
        if (category := catalogue.by_scope(scope)) is not None
    }
    contracts = [
        c
        for c in contract_store.all_latest(session)
        if c.recipient == recipient_id
        and c.activation is Activation.CONSENT
        and Channel.PULL in c.channels
        and c.is_valid_at(now)
        and wanted & c.category_ids
    ]
    if not contracts:
        return None
    contract = contracts[0]
    recipient = party_store.recipient(session, recipient_id)
    if recipient is None:
        return None
    transfer = check_transfer(recipient, contract.processing_countries, broker.adequacy, now.date())
    categories = [
        {
            "id": terms.category,
            "scope": catalogue.category(terms.category).scope,
            "name": _localized(catalogue.category(terms.category).name),
            "fields": sorted(terms.fields),
            "optional": terms.optional,
        }
        for terms in contract.categories
        if terms.category in wanted or not terms.optional
    ]
    vehicles = [
        {"vin": vin, "model": model or vin}
        # Only the owner consents for a vehicle: a driver is offered none.
        for vin, model in party_store.current_vehicles(
            session, customer_id, roles=(party_store.OWNER,)
        )
    ]
    precisions = sorted(p.value for p in contract.location.precisions) if contract.location else []
    return Offer(
        contract=contract,
        categories=categories,
        countries=[
            {
                "country": c.country,
                "mechanism": c.mechanism or "none",
                "reference": c.reference or "",
                "allowed": c.allowed,
            }
            for c in transfer.countries
        ],
        vehicles=vehicles,
        precisions=precisions,
    )


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _localized(value: Any) -> dict[str, str]:
    return {"en": str(getattr(value, "en", value)), "nl": str(getattr(value, "nl", value))}


def _text(value: Any, language: str) -> str:
    if value is None:
        return ""
    return str(getattr(value, language, "") or getattr(value, "en", ""))
