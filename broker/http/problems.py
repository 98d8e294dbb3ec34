"""Render errors as RFC 9457 problem details (``application/problem+json``).

https://www.rfc-editor.org/rfc/rfc9457

A :class:`~broker.errors.BrokerError` keeps its own type, title, status and
detail; aiohttp's error exceptions (404, 405, 413, ...) become ``about:blank``
problems; anything else is a 500 with a generic detail and the request id, and
never a traceback or exception text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from broker.errors import BrokerError

PROBLEM_CONTENT_TYPE = "application/problem+json"

_GENERIC_DETAIL = {
    404: "No resource exists at this path.",
    405: "This method is not allowed on this resource.",
    500: "An internal error occurred. Quote the request id when reporting it.",
}
# Headers of an aiohttp exception that describe its own plain-text body.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


def problem_response(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type_: str = "about:blank",
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> web.Response:
    """A problem-details response; ``title`` defaults to the status phrase."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _phrase(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extensions)
    return _render(body, status, request_id, headers)


def from_broker_error(error: BrokerError, request_id: str | None) -> web.Response:
    """The problem document the error describes about itself."""
    return _render(error.problem(), error.status, request_id, None)


def from_http_exception(
    exc: web.HTTPException, *, request_id: str | None, max_body_bytes: int
) -> web.Response:
    """An aiohttp error exception (status >= 400) as a problem document.

    Its headers (``Allow``, ``WWW-Authenticate``, ...) are kept; its body is not.
    """
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
    return problem_response(
        exc.status,
        detail=_detail_of(exc, max_body_bytes),
        request_id=request_id,
        headers=headers,
    )


def internal_error(request_id: str | None) -> web.Response:
    """The 500 answer to an unexpected exception: generic, with the request id."""
    return problem_response(500, detail=_GENERIC_DETAIL[500], request_id=request_id)


def is_default_text(exc: web.HTTPException) -> bool:
    """True when the exception carries aiohttp's own plain-text body, not a custom one."""
    return exc.content_type == "text/plain"


def _detail_of(exc: web.HTTPException, max_body_bytes: int) -> str | None:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"The request body exceeds the limit of {max_body_bytes} bytes."
    text = exc.text or ""
    if text and text != f"{exc.status}: {exc.reason}":
        return text
    return _GENERIC_DETAIL.get(exc.status)


def _render(
    body: dict[str, Any],
    status: int,
    request_id: str | None,
    headers: Mapping[str, str] | None,
) -> web.Response:
    if request_id:
        body.setdefault("request_id", request_id)
    response_headers: CIMultiDict[str] = CIMultiDict(headers or {})
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=response_headers,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
