"""What wraps every request: its id, its access-log line, its errors, its security headers.

* The request id comes from a well-formed ``X-Request-Id`` or is generated; it is
  bound to the log context and echoed in the response.
* One access-log line per request: method, path (never the query string, which
  may hold personal data), status and duration.
* Every error leaves as RFC 9457 problem details (:mod:`broker.http.problems`).
* Security headers are added in ``on_response_prepare``, so they reach every
  response: errors, redirects and streamed responses alike.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.errors import BrokerError
from broker.http.problems import (
    from_broker_error,
    from_http_exception,
    internal_error,
    is_default_text,
)
from broker.logs import bind_request_id, redact, reset_request_id

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
HTML_CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HSTS = "max-age=63072000; includeSubDomains"
#: Extra origins a page's forms may submit to, or be redirected to after a submission
#: (the consent page's answer redirects to the client's registered redirect URI).
FORM_ACTION_ORIGINS = web.RequestKey("form_action_origins", tuple)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_FIXED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "geolocation=(), camera=(), microphone=()",
}
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

access_log = logging.getLogger("broker.http.access")
log = logging.getLogger(__name__)


def accept_request_id(incoming: str | None) -> str:
    """``incoming`` if well formed and free of personal data, else a fresh id."""
    if incoming and _WELL_FORMED_ID.fullmatch(incoming) and redact(incoming) == incoming:
        return incoming
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request id for the request's lifetime and log its access line."""
    request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    token = bind_request_id(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        access_log.info(
            "%s %s %d %.1fms",
            request.method,
            request.path,
            status,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": duration_ms,
            },
        )
        reset_request_id(token)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into problem details; let redirects and custom bodies through."""
    request_id = request.get(REQUEST_ID)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not is_default_text(exc):
            raise
        return from_http_exception(
            exc, request_id=request_id, max_body_bytes=request.client_max_size
        )
    except BrokerError as error:
        if error.status >= 500:
            log.error("%s: %s", error.code, error.detail, exc_info=True)
        else:
            log.info("%s: %s", error.code, error.detail, extra={"problem": error.code})
        return from_broker_error(error, request_id)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return internal_error(request_id)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: security headers and the request id on every response."""
    headers = response.headers
    html = response.content_type in _HTML_TYPES
    policy = HTML_CSP if html else API_CSP
    extra = request.get(FORM_ACTION_ORIGINS, ())
    if html and extra:
        policy = policy.replace("form-action 'self'", " ".join(("form-action 'self'", *extra)))
    headers["Content-Security-Policy"] = policy
    headers.update(_FIXED_HEADERS)
    headers.setdefault("Cache-Control", "no-store")
    if request.secure:
        headers["Strict-Transport-Security"] = HSTS
    request_id = request.get(REQUEST_ID)
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id


def install(app: web.Application) -> None:
    """Add the middlewares (request id outermost) and the security-header hook to ``app``."""
    app.middlewares.append(request_id_middleware)
    app.middlewares.append(problem_middleware)
    app.on_response_prepare.append(add_security_headers)
