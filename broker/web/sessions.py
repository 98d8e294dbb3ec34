"""Customer browser sessions: a random cookie, only its SHA-256 stored, two expiries.

* The cookie value is 256 random bits; ``customer_session`` keeps only its
  SHA-256, so a copy of the database cannot be replayed as a cookie.
* The cookie is ``__Host-broker_session``: ``Secure``, ``HttpOnly``,
  ``SameSite=Lax``, ``Path=/`` and no ``Domain`` (the ``__Host-`` prefix makes
  browsers enforce the last three). Browsers accept ``Secure`` cookies from
  ``http://localhost`` (a secure context), so development needs no switch.
* A session ends at an absolute expiry (8 hours after login), after 30 minutes
  without a request, or at logout; "now" is the broker's controllable clock.
* :func:`require_customer` sends a visitor without a session to
  ``/login?next=...``; :func:`safe_next` keeps that target a local path (no
  open redirect).

https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from yarl import URL

from broker.domain.parties import Customer
from broker.store import web_sessions as session_store
from broker.store.web_sessions import CustomerSession, hash_session_id

__all__ = ["CustomerSession", "hash_session_id"]  # re-exported: the pages' view of a session
from broker.web import web_context

SESSION_COOKIE = "__Host-broker_session"
ABSOLUTE_LIFETIME = timedelta(hours=8)
IDLE_TIMEOUT = timedelta(minutes=30)
LOGIN_PATH = "/login"

_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32): 256 bits
_MAX_NEXT = 2048


@dataclass(frozen=True)
class _Lookup:
    session: CustomerSession | None


_LOOKUP = web.RequestKey("customer_session_lookup", _Lookup)


# -- store work (run off the event loop; the store holds the SQL) --


def create_session(db: Any, customer_id: str, now: datetime) -> tuple[str, CustomerSession]:
    """A new session for ``customer_id``: the cookie value and the session."""
    return session_store.create_session(db, customer_id, now, lifetime=ABSOLUTE_LIFETIME)


def resume_session(db: Any, id_hash: str, now: datetime) -> CustomerSession | None:
    """The live session with this hash, marked as seen now; an expired one is deleted."""
    return session_store.resume_session(db, id_hash, now, idle_timeout=IDLE_TIMEOUT)


def end_session(db: Any, id_hash: str) -> None:
    session_store.end_session(db, id_hash)


def purge_expired_sessions(db: Any, now: datetime) -> int:
    """Delete sessions past either expiry (for a periodic clean-up); the number deleted."""
    return session_store.purge_expired_sessions(db, now, idle_timeout=IDLE_TIMEOUT)


# -- the request side --


def _cookie_value(request: web.Request) -> str | None:
    value = request.cookies.get(SESSION_COOKIE)
    return value if value and _COOKIE_VALUE.fullmatch(value) else None


async def current_session(request: web.Request) -> CustomerSession | None:
    """The request's live session (looked up once per request), or None."""
    cached = request.get(_LOOKUP)
    if isinstance(cached, _Lookup):
        return cached.session
    value = _cookie_value(request)
    session = None
    if value is not None:
        runtime = web_context(request).runtime()
        id_hash, now = hash_session_id(value), runtime.clock.now()
        session = await runtime.database.write(lambda db: resume_session(db, id_hash, now))
    request[_LOOKUP] = _Lookup(session)
    return session


async def current_customer(request: web.Request) -> Customer | None:
    """The logged-in customer, or None."""
    session = await current_session(request)
    return session.customer if session else None


async def require_session(request: web.Request) -> CustomerSession:
    """The live session; without one, redirect (303) to the login page and back here."""
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther(location=login_url(request.rel_url.path_qs))
    return session


async def require_customer(request: web.Request) -> Customer:
    """The logged-in customer; without one, redirect (303) to the login page and back here."""
    return (await require_session(request)).customer


async def start_session(
    request: web.Request, response: web.StreamResponse, customer_id: str
) -> CustomerSession:
    """Log ``customer_id`` in: a new session id (the old session, if any, is deleted)."""
    runtime = web_context(request).runtime()
    old = _cookie_value(request)
    now = runtime.clock.now()

    def work(db: Any) -> tuple[str, CustomerSession]:
        if old is not None:
            end_session(db, hash_session_id(old))
        return create_session(db, customer_id, now)

    value, session = await runtime.database.write(work)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(ABSOLUTE_LIFETIME.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="Lax",
    )
    request[_LOOKUP] = _Lookup(session)
    return session


async def stop_session(request: web.Request, response: web.StreamResponse) -> None:
    """Log out: delete the session server-side and tell the browser to drop the cookie."""
    value = _cookie_value(request)
    if value is not None:
        id_hash = hash_session_id(value)
        await web_context(request).runtime().database.write(lambda db: end_session(db, id_hash))
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    request[_LOOKUP] = _Lookup(None)


def safe_next(value: str | None) -> str:
    """``value`` if it is a local path (``/...``), else ``/``: never another site.

    Refused: absolute URLs, protocol-relative ``//host``, ``/\\host`` (browsers
    read ``\\`` as ``/``), and anything with whitespace or control characters.
    """
    if not value or len(value) > _MAX_NEXT or not value.startswith("/"):
        return "/"
    if value.startswith("//") or "\\" in value:
        return "/"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def login_url(next_path: str | None) -> str:
    """The login page, coming back to ``next_path`` (if safe) afterwards."""
    target = safe_next(next_path)
    if target == "/":
        return LOGIN_PATH
    return str(URL(LOGIN_PATH).with_query(next=target))
