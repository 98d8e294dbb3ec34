"""``POST /v1/ingest/records``: telemetry batches from the car maker's backend.

Bodies: ``application/json`` (an array of records, or ``{"records": [...]}``,
at most ``MAX_JSON_RECORDS``) or ``application/x-ndjson`` (one record per line,
for large batches, read as a stream and ingested in chunks). Each record is
validated on its own: the response says, per record, whether it was stored, a
duplicate, withheld (location off) or rejected (and why); a rejected record
never costs the others. 200 when nothing was rejected, 207 otherwise.

Only the car maker's backend may call it: an access token of its client
(client credentials, scope ``ingest``) as an RFC 6750 bearer token.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from broker.errors import BadRequest, PayloadTooLarge
from broker.http import openapi as doc
from broker.http.oauth import require_token
from broker.ingest.service import REJECTED, BatchResult, IngestService, RawItem, RecordResult
from broker.oauth.scopes import INGEST
from broker.oauth.server import BrokerAuthorizationServer

MAX_JSON_RECORDS = 5_000
MAX_NDJSON_RECORDS = 100_000
NDJSON_CHUNK = 1_000
NDJSON_TYPES = {"application/x-ndjson", "application/jsonl", "application/ndjson"}


def add_routes(
    app: web.Application,
    *,
    service: Callable[[], IngestService],
    oauth: Callable[[], BrokerAuthorizationServer],
    max_bytes: int,
) -> None:
    async def ingest(request: web.Request) -> web.Response:
        # Only the car maker's backend, with a client-credentials token of scope ``ingest``.
        await require_token(request, oauth(), api="ingest", scopes=[INGEST])
        if request.content_type in NDJSON_TYPES:
            results = await _ndjson(request, service(), max_bytes)
        elif request.content_type == "application/json":
            results = await _json(request, service(), max_bytes)
        else:
            raise web.HTTPUnsupportedMediaType(text="send application/json or application/x-ndjson")
        summary = _summary(results)
        listed = (
            results
            if request.content_type == "application/json"
            else [r for r in results if r.status != "stored"]
        )
        body = {"summary": summary, "results": [r.as_dict() for r in listed]}
        return web.json_response(body, status=207 if summary["rejected"] else 200)

    record = doc.schema_ref("urn:vehicle-data-broker:schema:telemetry-record")
    doc.route(
        app,
        "POST",
        "/v1/ingest/records",
        ingest,
        summary="Telemetry from the car maker's backend (JSON or NDJSON batches)",
        tag="ingest",
        security=[("ingest", [INGEST])],
        request_body={
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"type": "array", "items": record, "maxItems": MAX_JSON_RECORDS},
                            {
                                "type": "object",
                                "required": ["records"],
                                "properties": {
                                    "records": {
                                        "type": "array",
                                        "items": record,
                                        "maxItems": MAX_JSON_RECORDS,
                                    }
                                },
                            },
                        ]
                    }
                },
                "application/x-ndjson": {"schema": record},
            },
        },
        responses={
            200: doc.json_content(_RESULTS, "Every record stored, a duplicate or withheld."),
            207: doc.json_content(_RESULTS, "Some records were rejected (see each result)."),
            **doc.BEARER_ERRORS,
            413: doc.problem("The body is too large."),
            415: doc.problem("Neither JSON nor NDJSON."),
        },
    )


_RESULTS = {
    "type": "object",
    "properties": {
        "summary": {"type": "object", "additionalProperties": {"type": "integer"}},
        "results": {"type": "array", "items": {"type": "object"}},
    },
}


async def _read_capped(request: web.Request, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes; send smaller batches")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes; send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: web.Request, service: IngestService, max_bytes: int) -> list[RecordResult]:
    raw = await _read_capped(request, max_bytes)
    try:
        body: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (
            f" (line {exc.lineno}, column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise BadRequest(f"the body is not valid JSON{where}; nothing was stored") from exc
    if isinstance(body, dict) and set(body) == {"records"}:
        body = body["records"]
    if not isinstance(body, list):
        raise BadRequest('send an array of records or {"records": [...]}; nothing was stored')
    if len(body) > MAX_JSON_RECORDS:
        raise PayloadTooLarge(
            f"{len(body)} records in one JSON batch; at most {MAX_JSON_RECORDS} "
            "(use application/x-ndjson for larger batches); nothing was stored"
        )
    batch = await service.ingest(
        [RawItem(value, position) for position, value in enumerate(body)], source="http"
    )
    return list(batch.results)


async def _ndjson(
    request: web.Request, service: IngestService, max_bytes: int
) -> list[RecordResult]:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes; send smaller batches")
    results: list[RecordResult] = []
    pending: list[RawItem] = []
    size = 0
    line_number = 0
    async for line in request.content:
        size += len(line)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"the body exceeds {max_bytes} bytes after line {line_number}; "
                f"{len(results)} records before it were processed"
            )
        line_number += 1
        text = line.strip()
        if not text:
            continue
        if line_number > MAX_NDJSON_RECORDS:
            raise PayloadTooLarge(f"more than {MAX_NDJSON_RECORDS} lines in one batch")
        pending.append(_parse_line(text, line_number))
        if len(pending) >= NDJSON_CHUNK:
            results += (await service.ingest(pending, source="http")).results
            pending = []
    if pending:
        results += (await service.ingest(pending, source="http")).results
    return results


def _parse_line(text: bytes, line_number: int) -> RawItem:
    try:
        return RawItem(json.loads(text), line_number)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        return RawItem(None, line_number, error=f"malformed JSON: {message}", raw=text)


def _summary(results: list[RecordResult]) -> dict[str, int]:
    return BatchResult(tuple(results)).summary() | {
        "rejected": sum(1 for r in results if r.status == REJECTED)
    }
