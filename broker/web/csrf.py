"""Cross-site request forgery defences for every form the pages accept.

* Forms of a logged-in customer carry the session's own token (synchronizer
  token pattern): ``customer_session.csrf_token``, compared in constant time.
* The login form has no session yet: it carries a short-lived token that is
  also set in the ``__Host-broker_login_csrf`` cookie (signed double submit).
  The token is ``nonce.expires.mac``, the MAC an HMAC-SHA256 under the
  application's key, so it cannot be forged or planted.
* Where the browser says where a request comes from (``Origin``,
  ``Sec-Fetch-Site``), anything but this site is refused before the token is
  even read.

A refusal raises :class:`CsrfRefused`, which the pages show as a 403 page.

https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from aiohttp import web
from markupsafe import Markup, escape
from multidict import MultiDictProxy
from yarl import URL

from broker.web import PageError, web_context
from broker.web.sessions import CustomerSession, current_session

CSRF_FIELD = "csrf_token"
LOGIN_CSRF_COOKIE = "__Host-broker_login_csrf"
LOGIN_TOKEN_LIFETIME = timedelta(hours=1)
# A login page reuses the token already in its cookie unless it expires sooner than this.
_REUSE_MARGIN = timedelta(minutes=15)
_ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
_MAX_TOKEN = 256

FormFields = MultiDictProxy[str | bytes | bytearray | web.FileField]


class CsrfRefused(PageError):
    """A form that did not prove it came from this site's own page."""

    status: ClassVar[int] = 403
    title_key: ClassVar[str] = "csrf.title"
    message_key: ClassVar[str] = "csrf.message"


@dataclass(frozen=True)
class SessionForm:
    """A verified form of a logged-in customer."""

    session: CustomerSession
    fields: FormFields


def csrf_field(token: str) -> Markup:
    """The hidden form field that carries ``token``."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, escape(token))


# -- login tokens (signed double submit) --


def issue_login_token(key: bytes, now: datetime) -> str:
    nonce = secrets.token_urlsafe(16)
    expires = int((now + LOGIN_TOKEN_LIFETIME).timestamp())
    return f"{nonce}.{expires}.{_mac(key, nonce, expires)}"


def login_token_expiry(key: bytes, token: str | None) -> int | None:
    """The expiry (Unix seconds) of a genuine login token, or None for anything else."""
    if not token or len(token) > _MAX_TOKEN:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
        return None
    nonce, expires_text, mac = parts
    expires = int(expires_text)
    if not hmac.compare_digest(mac.encode(), _mac(key, nonce, expires).encode()):
        return None
    return expires


def valid_login_token(key: bytes, token: str | None, now: datetime) -> bool:
    expires = login_token_expiry(key, token)
    return expires is not None and now.timestamp() < expires


def _mac(key: bytes, nonce: str, expires: int) -> str:
    digest = hmac.new(key, f"login-csrf|{nonce}|{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def login_token_for(request: web.Request) -> tuple[str, bool]:
    """The login form's token: the cookie's if still good for a while, else a new one.

    Returns the token and whether it is new (then :func:`set_login_cookie` it).
    """
    context = web_context(request)
    now = context.runtime().clock.now()
    current = request.cookies.get(LOGIN_CSRF_COOKIE)
    expires = login_token_expiry(context.csrf_key, current)
    fresh_enough = now + _REUSE_MARGIN
    if current and expires is not None and fresh_enough.timestamp() < expires:
        return current, False
    return issue_login_token(context.csrf_key, now), True


def set_login_cookie(response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=int(LOGIN_TOKEN_LIFETIME.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="Strict",
    )


def drop_login_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


# -- checks on a posted form --


def check_origin(request: web.Request) -> None:
    """Refuse a request the browser says comes from another site."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in _ALLOWED_FETCH_SITES:
        raise CsrfRefused(f"Sec-Fetch-Site is {fetch_site[:32]!r}")
    origin = request.headers.get("Origin")
    if origin is not None and origin.strip().lower() == "null" and fetch_site is not None:
        # Our pages send "Referrer-Policy: no-referrer", so browsers send "Origin: null"
        # with every form (Fetch standard, "append a request Origin header"); then
        # Sec-Fetch-Site, checked above, is what says where the form came from.
        return
    if origin is not None and origin.strip().lower() not in _own_origins(request):
        raise CsrfRefused("Origin is another site")


def _own_origins(request: web.Request) -> set[str]:
    origins = {f"{request.scheme}://{request.host}".lower()}
    public_url = web_context(request).runtime().settings.public_url
    if public_url:
        public = URL(public_url)
        if public.absolute:
            origins.add(str(public.origin()).lower())
    return origins


def _token_field(fields: FormFields) -> str | None:
    value = fields.get(CSRF_FIELD)
    return value if isinstance(value, str) and len(value) <= _MAX_TOKEN else None


async def read_login_form(request: web.Request) -> FormFields:
    """The login form's fields, once its origin and its double-submit token check out."""
    check_origin(request)
    fields = await request.post()
    submitted = _token_field(fields)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    context = web_context(request)
    now = context.runtime().clock.now()
    if submitted is None or cookie is None:
        raise CsrfRefused("login form without its token")
    if not hmac.compare_digest(submitted.encode(), cookie.encode()):
        raise CsrfRefused("login form token does not match its cookie")
    if not valid_login_token(context.csrf_key, submitted, now):
        raise CsrfRefused("login form token is forged or expired")
    return fields


async def read_session_form(request: web.Request) -> SessionForm:
    """A logged-in customer's form, once its origin and the session's token check out.

    Without a live session the form is refused too: it can no longer be trusted.
    """
    check_origin(request)
    fields = await request.post()
    session = await current_session(request)
    submitted = _token_field(fields)
    if session is None:
        raise CsrfRefused("form posted without a live session")
    if submitted is None or not hmac.compare_digest(
        submitted.encode(), session.csrf_token.encode()
    ):
        raise CsrfRefused("form token is missing or belongs to another session")
    return SessionForm(session, fields)
