"""Reading a JSON request body: bounded, UTF-8, strict JSON, and a clear error otherwise.

Each error says what became of the request (``nothing was stored``, ``nothing was
changed``), so a client knows it may simply send it again, corrected.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker.documents.schemas import parse_document
from broker.errors import BadRequest, PayloadTooLarge


async def read_json(
    request: web.Request, *, max_bytes: int, outcome: str, optional: bool = False
) -> Any:
    """The JSON document of the body (``None`` for an empty one when ``optional``)."""
    too_large = f"the body exceeds {max_bytes} bytes; {outcome}"
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(too_large)
    raw = bytearray()
    async for chunk in request.content.iter_chunked(8192):
        raw += chunk
        if len(raw) > max_bytes:
            raise PayloadTooLarge(too_large)
    if not raw.strip() and optional:
        return None
    if request.content_type != "application/json":
        raise BadRequest(f"send application/json; {outcome}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8; {outcome}") from exc
    value, errors = parse_document(text)
    if errors:
        raise BadRequest(f"the body is not valid JSON ({errors[0].message}); {outcome}")
    return value
