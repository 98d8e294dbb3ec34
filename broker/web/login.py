"""Customer login and logout: ``GET /login``, ``POST /login``, ``POST /logout``.

* The password is checked with Argon2id (:mod:`broker.credentials`); an unknown
  login is checked against a dummy hash, and gets the very same answer, so the
  page never tells whether a login exists.
* Back-off per login name (``login_throttle``, keyed by a hash of the name):
  every attempt is counted *before* the password is checked, and a success
  clears the count, so a burst of parallel guesses cannot overtake the lock.
  From the 5th failure in a row the name is locked for 1 minute, doubling with
  each further failure up to 1 hour; a locked name gets 429 with
  ``Retry-After`` even for the right password. Failures are forgotten after a
  day without one. Time is the broker's controllable clock.
* A successful login gets a new session id (no session fixation) and goes to
  the form's ``next`` if that is a local path, else to ``/``.

https://cheatsheetseries.owasp.org/cheatsheets/Authentication_Cheat_Sheet.html
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import secrets
from datetime import datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web

from broker.credentials import hash_password, verify_password
from broker.store import login_throttle as throttle_store
from broker.store.tables import CustomerRow
from broker.web import PageError, web_context
from broker.web.csrf import (
    FormFields,
    check_origin,
    drop_login_cookie,
    login_token_for,
    read_login_form,
    read_session_form,
    set_login_cookie,
)
from broker.web.i18n import Translator
from broker.web.render import page_translator, render
from broker.web.sessions import (
    current_session,
    login_url,
    safe_next,
    start_session,
    stop_session,
)

MAX_FAILURES = 5
FIRST_LOCK = timedelta(minutes=1)
LONGEST_LOCK = timedelta(hours=1)
FAILURE_MEMORY = timedelta(days=1)
MAX_LOGIN_LENGTH = 128
MAX_PASSWORD_LENGTH = 1024

log = logging.getLogger(__name__)


class Throttled(PageError):
    """Too many failed logins for one login name: try again later."""

    status: ClassVar[int] = 429
    title_key: ClassVar[str] = "throttle.title"
    message_key: ClassVar[str] = "throttle.message"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "login name locked after repeated failures",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after

    def message(self, t: Translator) -> str:
        if self.retry_after < 60:
            wait = t.plural("time.seconds", self.retry_after)
        else:
            wait = t.plural("time.minutes", math.ceil(self.retry_after / 60))
        return t(self.message_key, wait=wait)


# -- the back-off (plain functions on a database session) --


def throttle_key(login: str) -> str:
    """The ``login_throttle`` key of a login name: a hash, never the name itself."""
    return hashlib.sha256(b"login-throttle\0" + login.strip().casefold().encode()).hexdigest()


def lock_period(failures: int) -> timedelta:
    """How long a login name is locked after ``failures`` failures in a row."""
    if failures < MAX_FAILURES:
        return timedelta(0)
    doublings = min(failures - MAX_FAILURES, 16)
    return min(FIRST_LOCK * (1 << doublings), LONGEST_LOCK)


def reserve_attempt(db: Any, key: str, now: datetime) -> datetime | None:
    """Count an attempt for ``key`` before its password is checked.

    Returns the end of the lock if the name is locked (the attempt is not
    counted then), else None: the attempt may go ahead.
    """
    return throttle_store.reserve_attempt(
        db, key, now, lock_period=lock_period, max_failures=MAX_FAILURES, memory=FAILURE_MEMORY
    )


def clear_failures(db: Any, key: str) -> None:
    """A successful login: the name's failures are forgotten."""
    throttle_store.clear_failures(db, key)


def forget_stale_failures(db: Any, now: datetime) -> int:
    """Delete counts with no failure for a day and no lock running (a periodic clean-up)."""
    return throttle_store.forget_stale_failures(db, now, memory=FAILURE_MEMORY)


def find_customer(db: Any, login: str) -> CustomerRow | None:
    return throttle_store.find_customer(db, login, max_length=MAX_LOGIN_LENGTH)


@functools.cache
def dummy_hash() -> str:
    """A hash no password matches, checked for unknown logins so they cost the same."""
    return hash_password(secrets.token_urlsafe(32))


async def check_password(customer: CustomerRow | None, password: str) -> bool:
    """Argon2id verification off the event loop; the same work whether or not ``customer``."""
    password_hash = customer.password_hash if customer is not None else dummy_hash()
    candidate = password[:MAX_PASSWORD_LENGTH]
    matches = await asyncio.to_thread(verify_password, password_hash, candidate)
    return matches and customer is not None and len(password) <= MAX_PASSWORD_LENGTH


# -- the handlers --


async def login_page(request: web.Request) -> web.StreamResponse:
    """``GET /login``: the form, also when logged in (to log in again, or as someone else)."""
    return await _login_form(request, next_path=safe_next(request.query.get("next")))


async def login_submit(request: web.Request) -> web.StreamResponse:
    """``POST /login``: check the form's token, the back-off, then the password."""
    fields = await read_login_form(request)
    login = _text(fields, "login").strip()
    password = _text(fields, "password")
    next_path = safe_next(_text(fields, "next"))
    t = await page_translator(request)

    errors: dict[str, str] = {}
    if not login:
        errors["login"] = t("login.login_missing")
    if not password:
        errors["password"] = t("login.password_missing")
    if errors:
        return await _login_form(
            request, status=400, next_path=next_path, login=login, errors=errors
        )

    runtime = web_context(request).runtime()
    key, now = throttle_key(login), runtime.clock.now()
    locked_until = await runtime.database.write(lambda db: reserve_attempt(db, key, now))
    if locked_until is not None:
        raise Throttled(max(1, math.ceil((locked_until - now).total_seconds())))

    customer = await runtime.database.read(lambda db: find_customer(db, login))
    if not await check_password(customer, password):
        log.info("customer login failed")
        return await _login_form(
            request,
            status=400,
            next_path=next_path,
            login=login,
            form_error=t("login.failed"),
        )

    assert customer is not None  # check_password is false without a customer
    await runtime.database.write(lambda db: clear_failures(db, key))
    response = _see_other(next_path)
    await start_session(request, response, customer.id)
    drop_login_cookie(response)
    log.info("customer logged in", extra={"customer_id": customer.id})
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /logout``: end the session server-side, drop the cookie, back to the login page."""
    if await current_session(request) is not None:
        await read_session_form(request)  # a forged logout is refused too
    else:
        check_origin(request)
    response = _see_other("/login")
    await stop_session(request, response)
    return response


async def _login_form(
    request: web.Request,
    *,
    next_path: str,
    status: int = 200,
    login: str = "",
    errors: dict[str, str] | None = None,
    form_error: str | None = None,
) -> web.Response:
    token, new = login_token_for(request)
    response = await render(
        request,
        "login.html",
        status=status,
        csrf_token=token,
        page_url=login_url(next_path),
        next=next_path,
        login=login[:MAX_LOGIN_LENGTH],
        errors=errors or {},
        form_error=form_error,
    )
    if new:
        set_login_cookie(response, token)
    return response


def _text(fields: FormFields, name: str) -> str:
    value = fields.get(name)
    return value if isinstance(value, str) else ""


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
