"""The authorization server: authlib's grant logic, the broker's clients, tokens and store.

authlib's server hooks are synchronous. Every endpoint call runs whole inside
one database transaction in a worker thread (:meth:`BrokerAuthorizationServer.run`);
the hooks reach that transaction's session through a thread-local context, so
every grant type takes the same path to the store.

- RFC 6749 authorization code, client credentials and refresh token grants;
- RFC 7636 PKCE, ``S256`` only, required for every client;
- RFC 7523 ``private_key_jwt`` and ``client_secret_basic`` client authentication;
- RFC 9068 JWT access tokens (signed in :mod:`broker.oauth.jose`);
- RFC 9207 ``iss`` in authorization responses;
- refresh tokens rotate; a reused one revokes its whole family (RFC 9700 §4.14).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9207 import IssuerParameter
from sqlmodel import Session

from broker.clock import Clock
from broker.credentials import verify_client_secret
from broker.errors import BrokerError
from broker.gate.keyring import Keyring
from broker.oauth import jose
from broker.oauth.dpop import DpopPolicy, DpopRefused
from broker.oauth.keys import SigningKeys
from broker.store import oauth as oauth_store
from broker.store.database import Database
from broker.store.tables import AuthorizationCodeRow, OAuthClientRow, RefreshTokenRow

T = TypeVar("T")

ACCESS_TOKEN_LIFETIME = timedelta(minutes=5)
REFRESH_TOKEN_LIFETIME = timedelta(days=30)
CODE_LIFETIME = timedelta(seconds=60)

AUDIENCE_RECIPIENT = "urn:vehicle-data-broker:api:recipient"
AUDIENCE_CUSTOMER = "urn:vehicle-data-broker:api:customer"
AUDIENCE_INGEST = "urn:vehicle-data-broker:api:ingest"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenKind(StrEnum):
    """Who a token speaks for, and so which API it may call (see ``broker.oauth.matrix``)."""

    RECIPIENT_CUSTOMER = "recipient_customer"  # a recipient, for the grants one customer gave
    RECIPIENT = "recipient"  # a recipient, for every active grant of its contracts
    CUSTOMER = "customer"  # the customer app, for the customer's own API
    BACKEND = "backend"  # the car maker's backend, for ingest only


@dataclass(frozen=True)
class Principal:
    """The resource owner behind a code or refresh token (authlib's ``user``)."""

    customer_id: str
    grant_ids: tuple[str, ...] = ()
    family_id: str | None = None

    def get_user_id(self) -> str:
        return self.customer_id


class Client(ClientMixin):  # type: ignore[misc]
    """An ``oauth_client`` row as authlib sees a client."""

    def __init__(self, row: OAuthClientRow) -> None:
        self.row = row

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def kind(self) -> str:
        return self.row.kind

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.row.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.row.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.row.redirect_uris  # exact match, RFC 9700 §4.1.3

    def check_client_secret(self, client_secret: str) -> bool:
        digest = self.row.secret_digest
        return digest is not None and verify_client_secret(digest, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.row.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.row.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types


@dataclass
class _Context:
    session: Session
    now: datetime
    dpop_jkt: str | None = None  # the key a token issued now is bound to (RFC 9449)


_local = threading.local()


def _context() -> _Context:
    context: _Context | None = getattr(_local, "context", None)
    if context is None:
        raise RuntimeError(
            "authorization-server hooks run only inside BrokerAuthorizationServer.run"
        )
    return context


@dataclass
class OAuthResponse:
    """What authlib's core answers: status, body, headers (turned into HTTP by the edge)."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "location"]
        self.headers.append(("Location", value))


class BrokerRequest(OAuth2Request):  # type: ignore[misc]
    """An authlib request from what the HTTP edge read (query and form merged)."""

    def __init__(
        self, method: str, url: str, headers: dict[str, str], data: dict[str, str]
    ) -> None:
        super().__init__(method, url, headers=headers)
        self._data = dict(data)
        self.payload = BasicOAuth2Payload(self._data)

    @property
    def args(self) -> dict[str, str]:
        return self._data

    @property
    def form(self) -> dict[str, str]:
        return self._data


def oauth_request(
    method: str, url: str, headers: dict[str, str], data: dict[str, str]
) -> BrokerRequest:
    return BrokerRequest(method, url, headers, data)


def _form(request: OAuth2Request) -> dict[str, str]:
    form: dict[str, str] = request.form
    return form


class StrictPkce(CodeChallenge):  # type: ignore[misc]
    """RFC 7636 for every client, confidential ones too, and ``S256`` only (RFC 9700 §2.1.1)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send a code_challenge (S256)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code: StoredCode) -> str:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: StoredCode) -> str:
        return authorization_code.code_challenge_method


class _Issuer(IssuerParameter):  # type: ignore[misc]
    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


class BrokerAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        keys: SigningKeys,
        keyring: Keyring,
        issuer: str,
        scopes_supported: list[str],
        dpop: DpopPolicy | None = None,
    ) -> None:
        super().__init__(scopes_supported=scopes_supported)
        self.dpop = dpop or DpopPolicy(nonce_key=secrets.token_bytes(32))
        self.database = database
        self.clock = clock
        self.keys = keys
        self.keyring = keyring
        self.issuer = issuer
        self.token_endpoint = f"{issuer}/oauth/token"
        self.register_token_generator("default", self._generate_token)
        self.register_client_auth_method("private_key_jwt", self._private_key_jwt)
        self.register_grant(BrokerCodeGrant, [StrictPkce(required=True)])
        self.register_grant(BrokerClientCredentialsGrant)
        self.register_grant(BrokerRefreshTokenGrant)
        self.register_extension(_Issuer(issuer))
        self.register_endpoint(BrokerRevocationEndpoint)
        self.register_endpoint(BrokerIntrospectionEndpoint)

    # -- running the synchronous core inside one transaction ------------------------------

    def run_sync(self, work: Callable[[], T]) -> T:
        def in_transaction(session: Session) -> T:
            with self._bound(session):
                return work()

        return self.database.run_sync(in_transaction, write=True)

    async def run(self, work: Callable[[], T]) -> T:
        def in_transaction(session: Session) -> T:
            with self._bound(session):
                return work()

        return await self.database.write(in_transaction)

    def session(self) -> Session:
        """The session of the transaction the current call runs in."""
        return _context().session

    @contextmanager
    def _bound(self, session: Session) -> Iterator[None]:
        _local.context = _Context(session=session, now=self.clock.now())
        try:
            yield
        finally:
            _local.context = None

    def token_response(self, request: OAuth2Request, *, dpop_proofs: list[str]) -> OAuthResponse:
        """The token endpoint's answer; with a DPoP proof, the token is bound to its key."""
        context = _context()
        if dpop_proofs:
            try:
                if len(dpop_proofs) > 1:
                    raise DpopRefused("send exactly one DPoP header")
                proof = self.dpop.check(
                    context.session,
                    dpop_proofs[0],
                    method="POST",
                    url=self.token_endpoint,
                    now=context.now,
                )
            except DpopRefused as exc:
                headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
                if exc.error == "use_dpop_nonce":
                    headers.append(("DPoP-Nonce", self.dpop.nonce(context.now)))
                body = {"error": exc.error, "error_description": exc.detail}
                return OAuthResponse(400, body, headers)
            context.dpop_jkt = proof.jkt
        response: OAuthResponse = self.create_token_response(request)
        if self.dpop.nonce_required:
            response.headers.append(("DPoP-Nonce", self.dpop.nonce(context.now)))
        return response

    # -- authlib hooks --------------------------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        row = oauth_store.client(_context().session, client_id)
        return Client(row) if row is not None and row.status == "active" else None

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers or []))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Store the refresh token (hashed) in its rotation family."""
        refresh = token.get("refresh_token")
        if not refresh:
            return
        context = _context()
        principal: Principal = request.user
        family = principal.family_id or secrets.token_hex(16)
        oauth_store.save_refresh(
            context.session,
            RefreshTokenRow(
                token_hash=oauth_store.digest(refresh),
                family_id=family,
                client_id=request.client.client_id,
                customer_id=principal.customer_id,
                scope=token.get("scope", ""),
                grant_ids=list(principal.grant_ids),
                created_at=context.now,
                expires_at=context.now + REFRESH_TOKEN_LIFETIME,
            ),
        )

    def _generate_token(
        self,
        grant_type: str,
        client: Client,
        user: Principal | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        context = _context()
        kind, audience, subject = self._token_kind(client, user)
        extra: dict[str, Any] = {"token_kind": kind.value}
        if user is not None:
            extra["grants"] = list(user.grant_ids)
            if user.family_id:
                extra["fam"] = user.family_id
        if client.row.recipient_id:
            extra["recipient"] = client.row.recipient_id
        access_token, claims = jose.issue_access_token(
            self.keys,
            issuer=self.issuer,
            audience=audience,
            subject=subject,
            client_id=client.client_id,
            scope=scope or "",
            lifetime=ACCESS_TOKEN_LIFETIME,
            now=context.now,
            extra=extra,
            cnf_jkt=context.dpop_jkt,
        )
        if user is not None and user.grant_ids:
            oauth_store.record_token_grants(
                context.session,
                claims["jti"],
                user.grant_ids,
                context.now + ACCESS_TOKEN_LIFETIME,
            )
        token: dict[str, Any] = {
            "token_type": "DPoP" if context.dpop_jkt else "Bearer",
            "access_token": access_token,
            "expires_in": int(ACCESS_TOKEN_LIFETIME.total_seconds()),
            "scope": scope or "",
        }
        if include_refresh_token and user is not None and client.check_grant_type("refresh_token"):
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    def _token_kind(self, client: Client, user: Principal | None) -> tuple[TokenKind, str, str]:
        if client.kind == "backend":
            return TokenKind.BACKEND, AUDIENCE_INGEST, client.client_id
        if client.kind == "customer_app":
            assert user is not None
            return TokenKind.CUSTOMER, AUDIENCE_CUSTOMER, user.customer_id
        recipient = client.row.recipient_id or ""
        if user is None:
            return TokenKind.RECIPIENT, AUDIENCE_RECIPIENT, client.client_id
        subject = customer_subject(self.keyring, recipient, user.customer_id)
        return TokenKind.RECIPIENT_CUSTOMER, AUDIENCE_RECIPIENT, subject

    def _private_key_jwt(self, query_client: Any, request: OAuth2Request) -> Client | None:
        """RFC 7523 §2.2 client authentication, with one-time assertion ids."""
        form = _form(request)
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return None
        assertion = form.get("client_assertion", "")
        client_id = form.get("client_id") or jose.unverified_issuer(assertion)
        client: Client | None = query_client(client_id) if client_id else None
        if client is None or client.row.auth_method != "private_key_jwt" or not client.row.jwks:
            return None
        context = _context()
        try:
            claims = jose.verify_client_assertion(
                assertion,
                client_id=client.client_id,
                client_jwks=client.row.jwks,
                token_endpoint=self.token_endpoint,
                issuer=self.issuer,
                now=context.now,
            )
        except BrokerError:
            return None
        expires = datetime.fromtimestamp(int(claims["exp"]), tz=context.now.tzinfo)
        if not oauth_store.remember_jti(
            context.session, "client_assertion", claims["jti"], expires
        ):
            return None  # a replayed assertion
        return client


# -- revocation (RFC 7009) and introspection (RFC 7662) ----------------------------------


@dataclass
class AccessTokenRecord:
    """A presented JWT access token, verified, as the endpoints see it."""

    token: str
    claims: dict[str, Any]

    def check_client(self, client: Client) -> bool:
        return bool(self.claims.get("client_id") == client.client_id)

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def is_expired(self) -> bool:
        return _context().now.timestamp() >= float(self.claims["exp"])

    def is_revoked(self) -> bool:
        return not token_still_active(_context().session, self.claims)


def token_still_active(session: Session, claims: dict[str, Any]) -> bool:
    """Whether a signature-valid, unexpired access token is still good: not revoked, its
    refresh family not revoked, and every grant it relies on still active."""
    from broker.store import grants as grant_store

    if oauth_store.access_token_revoked(session, str(claims.get("jti"))):
        return False
    family = claims.get("fam")
    if isinstance(family, str) and oauth_store.family_revoked(session, family):
        return False
    now = _context().now if getattr(_local, "context", None) else None
    for grant_id in claims.get("grants") or []:
        grant = grant_store.get(session, str(grant_id))
        if grant is None or (now is not None and not grant.is_active(now)):
            return False
    return True


_TOKEN_AUTH_METHODS = ["client_secret_basic", "private_key_jwt", "none"]
_AUDIENCES = (AUDIENCE_RECIPIENT, AUDIENCE_CUSTOMER, AUDIENCE_INGEST)


def _query_token(
    server: BrokerAuthorizationServer, token: str, hint: str | None
) -> StoredRefresh | AccessTokenRecord | None:
    context = _context()
    if hint != "access_token":
        row = oauth_store.find_refresh(context.session, token)
        if row is not None:
            return StoredRefresh(row)
    if hint == "refresh_token" or token.count(".") != 2:
        return None
    for audience in _AUDIENCES:
        try:
            claims = jose.verify_access_token(
                token, server.keys, issuer=server.issuer, audience=audience, now=context.now
            )
        except BrokerError:
            continue
        return AccessTokenRecord(token, claims)
    return None


class BrokerRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = _TOKEN_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _query_token(self.server, token_string, token_type_hint)

    def revoke_token(self, token: Any, request: OAuth2Request) -> None:
        context = _context()
        if isinstance(token, StoredRefresh):
            # Revoking a refresh token ends its family, and the access tokens it minted.
            oauth_store.revoke_family(context.session, token.row.family_id, context.now)
        else:
            expires = datetime.fromtimestamp(float(token.claims["exp"]), tz=context.now.tzinfo)
            oauth_store.revoke_access_token(
                context.session, token.claims["jti"], expires, context.now
            )


class BrokerIntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = _TOKEN_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _query_token(self.server, token_string, token_type_hint)

    def check_permission(self, token: Any, client: Client, request: OAuth2Request) -> bool:
        return bool(token.check_client(client))

    def create_introspection_payload(self, token: Any) -> dict[str, Any]:
        # Exactly {"active": false} for anything not active (RFC 7662 §2.2).
        if not token or token.is_expired() or token.is_revoked():
            return {"active": False}
        return self.introspect_token(token)

    def introspect_token(self, token: Any) -> dict[str, Any]:
        if isinstance(token, StoredRefresh):
            row = token.row
            return {
                "active": True,
                "token_type": "refresh_token",
                "client_id": row.client_id,
                "scope": row.scope,
                "exp": int(row.expires_at.timestamp()),
                "iat": int(row.created_at.timestamp()),
            }
        claims = token.claims
        payload = {"active": True, "token_type": "Bearer"}
        for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "cnf"):
            if name in claims:
                payload[name] = claims[name]
        return payload


def customer_subject(keyring: Keyring, recipient_id: str, customer_id: str) -> str:
    """The ``sub`` a recipient sees for a customer: a pseudonym, different per recipient."""
    return keyring.pseudonymiser(recipient_id, "oauth-subject").pseudonym("customer", customer_id)


# -- grants -------------------------------------------------------------------------------


class BrokerCodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
        "client_secret_basic",
        "private_key_jwt",
        "none",
    ]

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        context = _context()
        principal: Principal = request.user
        form = _form(request)
        oauth_store.save_code(
            context.session,
            AuthorizationCodeRow(
                code_hash=oauth_store.digest(code),
                client_id=request.client.client_id,
                customer_id=principal.customer_id,
                redirect_uri=form.get("redirect_uri", ""),
                scope=request.scope or "",
                grant_ids=list(principal.grant_ids),
                code_challenge=form.get("code_challenge", ""),
                code_challenge_method=form.get("code_challenge_method", "S256"),
                created_at=context.now,
                expires_at=context.now + CODE_LIFETIME,
            ),
        )

    def query_authorization_code(self, code: str, client: Client) -> StoredCode | None:
        context = _context()
        row = oauth_store.find_code(context.session, code)
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_at is not None:
            # A code used twice: refuse, and revoke what the first use produced (RFC 6749 §4.1.2).
            _revoke_code_tokens(context, row)
            return None
        if context.now >= row.expires_at:
            return None
        return StoredCode(row)

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        context = _context()
        oauth_store.mark_code_used(context.session, authorization_code.row, context.now)

    def authenticate_user(self, authorization_code: StoredCode) -> Principal:
        row = authorization_code.row
        return Principal(customer_id=row.customer_id, grant_ids=tuple(row.grant_ids))


@dataclass
class StoredCode:
    """An authorization code row as authlib's ``AuthorizationCodeMixin`` sees it."""

    row: AuthorizationCodeRow

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int | None:
        return int(self.row.created_at.timestamp())

    @property
    def code_challenge(self) -> str:
        return self.row.code_challenge

    @property
    def code_challenge_method(self) -> str:
        return self.row.code_challenge_method


def _revoke_code_tokens(context: _Context, row: AuthorizationCodeRow) -> None:
    for grant_id in row.grant_ids:
        for family in oauth_store.families_for_grant(context.session, grant_id, row.customer_id):
            oauth_store.revoke_family(context.session, family, context.now)


class BrokerClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "private_key_jwt"]


class BrokerRefreshTokenGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
        "client_secret_basic",
        "private_key_jwt",
        "none",
    ]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> StoredRefresh | None:
        context = _context()
        row = oauth_store.find_refresh(context.session, refresh_token)
        if row is None:
            return None
        if row.rotated_at is not None or row.revoked_at is not None:
            # Reuse of a rotated (or revoked) token: the family is compromised (RFC 9700 §4.14.2).
            oauth_store.revoke_family(context.session, row.family_id, context.now)
            return None
        if context.now >= row.expires_at:
            return None
        return StoredRefresh(row)

    def authenticate_user(self, refresh_token: StoredRefresh) -> Principal:
        row = refresh_token.row
        assert row.customer_id is not None
        return Principal(row.customer_id, tuple(row.grant_ids), family_id=row.family_id)

    def revoke_old_credential(self, refresh_token: StoredRefresh) -> None:
        context = _context()
        refresh_token.row.rotated_at = context.now
        context.session.add(refresh_token.row)
        context.session.flush()


@dataclass
class StoredRefresh:
    """A refresh token row as authlib's ``TokenMixin`` sees it."""

    row: RefreshTokenRow

    def check_client(self, client: Client) -> bool:
        return self.row.client_id == client.client_id

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return int((self.row.expires_at - self.row.created_at).total_seconds())

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.row.rotated_at is not None

    def is_expired(self) -> bool:
        return _context().now >= self.row.expires_at
