"""The authorization server's HTTP endpoints, and bearer-token checks for protected APIs.

- ``/.well-known/oauth-authorization-server`` (RFC 8414) and its ``jwks_uri``;
- ``/oauth/token`` (RFC 6749), ``/oauth/revoke`` (RFC 7009), ``/oauth/introspect``
  (RFC 7662): form bodies in, JSON out, errors as RFC 6749 says;
- :func:`require_token`: RFC 6750 bearer tokens for every protected API, refused
  with ``WWW-Authenticate`` unless the token's kind may call that API
  (:data:`API_ACCESS`, the authorization matrix).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiMapping

from broker.errors import BrokerError
from broker.http import openapi as doc
from broker.oauth import jose
from broker.oauth.dpop import DpopRefused
from broker.oauth.server import (
    AUDIENCE_CUSTOMER,
    AUDIENCE_INGEST,
    AUDIENCE_RECIPIENT,
    BrokerAuthorizationServer,
    OAuthResponse,
    TokenKind,
    oauth_request,
    token_still_active,
)

#: The authorization matrix: which kind of token may call which API (and its audience).
API_ACCESS: dict[str, tuple[str, frozenset[TokenKind]]] = {
    "recipient": (
        AUDIENCE_RECIPIENT,
        frozenset({TokenKind.RECIPIENT_CUSTOMER, TokenKind.RECIPIENT}),
    ),
    "customer": (AUDIENCE_CUSTOMER, frozenset({TokenKind.CUSTOMER})),
    "ingest": (AUDIENCE_INGEST, frozenset({TokenKind.BACKEND})),
}

ServerGetter = Callable[[], BrokerAuthorizationServer]


@dataclass(frozen=True)
class TokenContext:
    """What a verified bearer token lets its caller do."""

    kind: TokenKind
    client_id: str
    subject: str
    recipient_id: str | None
    grant_ids: tuple[str, ...]
    scopes: frozenset[str]
    claims: dict[str, Any]
    dpop_jkt: str | None = None


class TokenRefused(BrokerError):
    code = "invalid_token"
    status = 401
    title = "Invalid access token"


class InsufficientScope(BrokerError):
    code = "insufficient_scope"
    status = 403
    title = "Insufficient scope"


def metadata(server: BrokerAuthorizationServer) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    base = server.issuer
    methods = ["client_secret_basic", "private_key_jwt", "none"]
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "jwks_uri": f"{base}/oauth/jwks",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "scopes_supported": sorted(server.scopes_supported or []),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": sorted(jose.CLIENT_ALGORITHMS),
        "dpop_signing_alg_values_supported": sorted(jose.CLIENT_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_methods_supported": methods,
        "authorization_response_iss_parameter_supported": True,
        "require_pushed_authorization_requests": False,
    }


def add_routes(app: web.Application, *, server: ServerGetter) -> None:
    async def well_known(_request: web.Request) -> web.Response:
        return web.json_response(metadata(server()), headers={"Cache-Control": "max-age=300"})

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response(server().keys.jwks(), headers={"Cache-Control": "max-age=300"})

    async def token(request: web.Request) -> web.Response:
        oauth = server()
        req = await _read(request)
        proofs = request.headers.getall("DPoP", [])
        return _respond(await oauth.run(lambda: oauth.token_response(req, dpop_proofs=proofs)))

    def endpoint(name: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            oauth = server()
            req = await _read(request)
            return _respond(await oauth.run(lambda: oauth.create_endpoint_response(name, req)))

        return handle

    json_object = {"type": "object"}
    client_auth: list[tuple[str, list[str]]] = [("client", [])]
    token_form = doc.form_body(
        {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, required=["token"]
    )
    doc.route(
        app,
        "GET",
        "/.well-known/oauth-authorization-server",
        well_known,
        summary="Authorization server metadata (RFC 8414)",
        tag="oauth",
        responses={200: doc.json_content(json_object, "The metadata.")},
    )
    doc.route(
        app,
        "GET",
        "/oauth/jwks",
        jwks,
        summary="The keys that sign access tokens (JWK Set)",
        tag="oauth",
        responses={200: doc.json_content(json_object, "The JWK Set.")},
    )
    doc.route(
        app,
        "POST",
        "/oauth/token",
        token,
        summary="Tokens: authorization code, client credentials, refresh (RFC 6749; DPoP)",
        tag="oauth",
        security=client_auth,
        parameters=[doc.header("DPoP", "A DPoP proof: binds the token to its key (RFC 9449).")],
        request_body=doc.form_body(
            {
                "grant_type": {
                    "enum": ["authorization_code", "client_credentials", "refresh_token"]
                },
                "code": {"type": "string"},
                "code_verifier": {"type": "string"},
                "redirect_uri": {"type": "string"},
                "refresh_token": {"type": "string"},
                "scope": {"type": "string"},
                "client_id": {"type": "string"},
                "client_assertion_type": {"type": "string"},
                "client_assertion": {"type": "string"},
            },
            required=["grant_type"],
        ),
        responses={
            200: doc.json_content(_TOKEN_RESPONSE, "The token response."),
            400: doc.oauth_error("An RFC 6749 error (or invalid_dpop_proof, use_dpop_nonce)."),
            401: doc.oauth_error("invalid_client."),
        },
    )
    doc.route(
        app,
        "POST",
        "/oauth/revoke",
        endpoint("revocation"),
        summary="Token revocation (RFC 7009)",
        tag="oauth",
        security=client_auth,
        request_body=token_form,
        responses={
            200: {"description": "Revoked (or unknown: the answer is the same)."},
            400: doc.oauth_error("Malformed request."),
            401: doc.oauth_error("invalid_client."),
        },
    )
    doc.route(
        app,
        "POST",
        "/oauth/introspect",
        endpoint("introspection"),
        summary="Token introspection (RFC 7662)",
        tag="oauth",
        security=client_auth,
        request_body=token_form,
        responses={
            200: doc.json_content(json_object, "The token's state: {active: false} if not."),
            400: doc.oauth_error("Malformed request."),
            401: doc.oauth_error("invalid_client."),
        },
    )


_TOKEN_RESPONSE = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in"],
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"enum": ["Bearer", "DPoP"]},
        "expires_in": {"type": "integer"},
        "refresh_token": {"type": "string"},
        "scope": {"type": "string"},
    },
}


def _invalid_request(description: str) -> web.HTTPBadRequest:
    body = {"error": "invalid_request", "error_description": description}
    return web.HTTPBadRequest(text=json.dumps(body), content_type="application/json")


async def _read(request: web.Request) -> Any:
    if request.method == "POST" and request.content_type != "application/x-www-form-urlencoded":
        raise _invalid_request("send application/x-www-form-urlencoded")
    form: MultiMapping[Any] = await request.post() if request.method == "POST" else MultiDict()
    keys = [*request.query.keys(), *form.keys()]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:  # RFC 6749 §3.1: request parameters must not be included more than once
        raise _invalid_request(f"repeated parameter {repeated[0]}")
    data = {key: str(value) for source in (request.query, form) for key, value in source.items()}
    headers = dict(request.headers.items())
    return oauth_request(request.method, str(request.url), headers, data)


def _respond(response: OAuthResponse) -> web.Response:
    headers = dict(response.headers)
    body = response.body
    if response.status in (301, 302, 303):
        return web.Response(status=response.status, headers=headers)
    text = body if isinstance(body, str) else json.dumps(body)
    headers.pop("Content-Type", None)
    return web.Response(
        status=response.status, text=text, content_type="application/json", headers=headers
    )


async def require_token(
    request: web.Request,
    server: BrokerAuthorizationServer,
    *,
    api: str,
    scopes: Iterable[str] = (),
) -> TokenContext:
    """The caller's verified token, if its kind may call ``api``; RFC 6750 errors otherwise.

    A DPoP-bound token (``cnf.jkt``) must come with the ``DPoP`` scheme and a
    proof for this request, signed by the bound key (RFC 9449 section 7).
    """
    audience, kinds = API_ACCESS[api]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    scheme, token = scheme.lower(), token.strip()
    if scheme not in ("bearer", "dpop") or not token:
        raise challenge(TokenRefused("an access token is required"), error=None)
    try:
        claims = jose.verify_access_token(
            token,
            server.keys,
            issuer=server.issuer,
            audience=audience,
            now=server.clock.now(),
        )
    except BrokerError as exc:
        raise challenge(
            TokenRefused(exc.detail), error="invalid_token", dpop=scheme == "dpop"
        ) from exc
    try:
        kind = TokenKind(claims.get("token_kind", ""))
    except ValueError:
        kind = None
    if kind not in kinds:
        raise challenge(
            TokenRefused("this kind of token may not call this API"), error="invalid_token"
        )
    assert kind is not None
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if jkt is not None and scheme != "dpop":
        refused = TokenRefused("this token is DPoP-bound: send it as 'DPoP' with a proof")
        raise challenge(refused, error="invalid_token", dpop=True)
    if jkt is None and scheme == "dpop":
        raise challenge(TokenRefused("this token is not DPoP-bound"), error="invalid_token")
    proofs = request.headers.getall("DPoP", [])
    url = server.issuer + request.path
    method = request.method

    def check() -> str | None:
        from broker.oauth.server import _context

        context = _context()
        if not token_still_active(context.session, claims):
            return "the token was revoked or its grant has ended"
        if jkt is not None:
            if len(proofs) != 1:
                raise DpopRefused("send exactly one DPoP proof with a DPoP-bound token")
            proof = server.dpop.check(
                context.session,
                proofs[0],
                method=method,
                url=url,
                now=context.now,
                access_token=token,
            )
            if not hmac.compare_digest(proof.jkt, str(jkt)):
                raise DpopRefused("the DPoP proof is signed by another key than the token's")
        return None

    try:
        inactive = await server.run(check)
    except DpopRefused as exc:
        nonce = server.dpop.nonce(server.clock.now()) if exc.error == "use_dpop_nonce" else None
        raise challenge(exc, error=exc.error, dpop=True, nonce=nonce) from exc
    if inactive is not None:
        raise challenge(TokenRefused(inactive), error="invalid_token", dpop=jkt is not None)
    granted = frozenset(str(claims.get("scope", "")).split())
    missing = sorted(set(scopes) - granted)
    if missing:
        raise challenge(
            InsufficientScope(f"the token lacks the scope {missing[0]}"),
            error="insufficient_scope",
            scope=" ".join(sorted(set(scopes))),
            dpop=jkt is not None,
        )
    return TokenContext(
        kind=kind,
        client_id=str(claims["client_id"]),
        subject=str(claims["sub"]),
        recipient_id=claims.get("recipient"),
        grant_ids=tuple(claims.get("grants") or ()),
        scopes=granted,
        claims=claims,
        dpop_jkt=str(jkt) if jkt is not None else None,
    )


def challenge(
    problem: BrokerError,
    *,
    error: str | None,
    scope: str | None = None,
    dpop: bool = False,
    nonce: str | None = None,
) -> web.HTTPException:
    """An RFC 6750 (or RFC 9449) refusal: problem details in the body, the challenge in
    ``WWW-Authenticate`` (``DPoP`` for DPoP-bound tokens and contracts that need them)."""
    if dpop:
        parts = [f'DPoP algs="{" ".join(sorted(jose.CLIENT_ALGORITHMS))}"']
    else:
        parts = ['Bearer realm="vehicle-data-broker"']
    if error is not None:
        parts.append(f'error="{error}"')
        parts.append(f'error_description="{problem.detail}"')
    if scope is not None:
        parts.append(f'scope="{scope}"')
    headers = {"WWW-Authenticate": ", ".join(parts)}
    if nonce is not None:
        headers["DPoP-Nonce"] = nonce
    exception = web.HTTPForbidden if problem.status == 403 else web.HTTPUnauthorized
    return exception(
        text=json.dumps(problem.problem()),
        content_type="application/problem+json",
        headers=headers,
    )
