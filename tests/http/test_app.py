"""broker.http: health endpoints, problem details, request ids, security headers, access log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from broker.errors import NotFound
from broker.http import app as app_module
from broker.http.app import create_app
from broker.http.middleware import API_CSP, HSTS, HTML_CSP, add_security_headers
from broker.http.problems import PROBLEM_CONTENT_TYPE
from broker.logs import configure_logging
from broker.settings import Settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

VIN = "WF0XXXGCDX1234567"
LIMIT = 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "geolocation=(), camera=(), microphone=()",
}


async def ready() -> None:
    return None


async def not_ready() -> None:
    raise RuntimeError("connection to db-internal-host refused")


def build_app(readiness: Callable[[], Awaitable[None]] = ready) -> web.Application:
    app = create_app(
        settings=Settings(max_request_bytes=LIMIT), readiness=readiness, version="9.9.9"
    )

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError(f"internal secret for vehicle {VIN}")

    async def missing(request: web.Request) -> web.Response:
        raise NotFound("no such grant")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<p>consent</p>", content_type="text/html")

    async def cached(request: web.Request) -> web.Response:
        return web.json_response({}, headers={"Cache-Control": "public, max-age=60"})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/healthz")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"chunk")
        return response

    app.router.add_post("/echo", echo)
    app.router.add_get("/boom", boom)
    app.router.add_get("/missing", missing)
    app.router.add_get("/page", page)
    app.router.add_get("/cached", cached)
    app.router.add_get("/moved", moved)
    app.router.add_get("/stream", stream)
    return app


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """JSON logs captured from the root logger, restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_level = logging.getLogger("aiohttp.access").level
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield stream
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access_level)


def log_entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_secure(response: Any, *, html: bool = False) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert response.headers["Content-Security-Policy"] == (HTML_CSP if html else API_CSP)
    assert "Strict-Transport-Security" not in response.headers  # plain http
    assert response.headers.get("X-Request-Id")


async def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = json.loads(await response.text())
    assert body["status"] == status
    assert body["type"]
    assert body["title"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert_secure(response)
    return body


async def test_healthz(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "version": "9.9.9"}
    assert response.headers["Cache-Control"] == "no-store"
    assert_secure(response)


async def test_readyz_ready(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}


async def test_readyz_not_ready_hides_the_cause(
    aiohttp_client: MakeClient, log_stream: io.StringIO
) -> None:
    client = await aiohttp_client(build_app(not_ready))
    response = await client.get("/readyz")
    body = await assert_problem(response, 503)
    text = json.dumps(body)
    assert "db-internal-host" not in text
    assert "RuntimeError" not in text
    logged = [entry.get("exc", "") for entry in log_entries(log_stream)]
    assert any("db-internal-host" in exc for exc in logged)


async def test_readyz_times_out(
    aiohttp_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "READINESS_TIMEOUT_SECONDS", 0.01)

    async def hangs() -> None:
        await asyncio.sleep(10)

    client = await aiohttp_client(build_app(hangs))
    await assert_problem(await client.get("/readyz"), 503)


async def test_unknown_path_is_a_404_problem(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    body = await assert_problem(await client.get("/nowhere"), 404)
    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"


async def test_wrong_method_is_a_405_problem(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    response = await client.delete("/healthz")
    await assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


async def test_oversized_body_is_a_413_problem(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    assert (await client.post("/echo", data=b"x" * LIMIT)).status == 200
    body = await assert_problem(await client.post("/echo", data=b"x" * (LIMIT + 1)), 413)
    assert str(LIMIT) in body["detail"]


async def test_internal_error_is_a_generic_500(
    aiohttp_client: MakeClient, log_stream: io.StringIO
) -> None:
    client = await aiohttp_client(build_app())
    response = await client.get("/boom")
    body = await assert_problem(response, 500)
    raw = await response.text()
    assert "internal secret" not in raw
    assert "RuntimeError" not in raw
    assert VIN not in raw
    assert "Traceback" not in raw
    errors = [e for e in log_entries(log_stream) if e["level"] == "ERROR"]
    assert errors
    assert errors[0]["request_id"] == body["request_id"]
    assert "internal secret for vehicle [vin]" in errors[0]["exc"]
    assert VIN not in log_stream.getvalue()


async def test_broker_error_keeps_its_problem(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    body = await assert_problem(await client.get("/missing"), 404)
    assert body["type"] == "urn:vehicle-data-broker:problem:not_found"
    assert body["detail"] == "no such grant"


async def test_html_gets_the_strict_page_policy(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    assert_secure(await client.get("/page"), html=True)


async def test_handler_may_choose_its_cache_policy(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    response = await client.get("/cached")
    assert response.headers["Cache-Control"] == "public, max-age=60"
    assert_secure(response)


async def test_redirects_pass_through_with_headers(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    response = await client.get("/moved", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/healthz"
    assert_secure(response)


async def test_streamed_response_carries_headers(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    response = await client.get("/stream")
    assert await response.read() == b"chunk"
    assert_secure(response)


async def test_well_formed_request_id_is_echoed(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(build_app())
    response = await client.get("/nowhere", headers={"X-Request-Id": "trace.42_a-b"})
    assert response.headers["X-Request-Id"] == "trace.42_a-b"
    assert (await response.json())["request_id"] == "trace.42_a-b"


@pytest.mark.parametrize(
    "incoming", ["has space", "x" * 129, "<script>", "id;drop", "", VIN, "ünïcode"]
)
async def test_malformed_request_id_is_replaced(aiohttp_client: MakeClient, incoming: str) -> None:
    client = await aiohttp_client(build_app())
    response = await client.get("/healthz", headers={"X-Request-Id": incoming})
    echoed = response.headers["X-Request-Id"]
    assert echoed != incoming
    assert len(echoed) == 32
    assert all(c in "0123456789abcdef" for c in echoed)


async def test_access_log_is_json_with_request_id_and_no_query(
    aiohttp_client: MakeClient, log_stream: io.StringIO
) -> None:
    client = await aiohttp_client(build_app())
    await client.get(f"/healthz?vin={VIN}&email=a@b.example", headers={"X-Request-Id": "req-7"})
    await client.get("/nowhere", headers={"X-Request-Id": "req-8"})
    access = [e for e in log_entries(log_stream) if e["logger"] == "broker.http.access"]
    assert [(e["request_id"], e["method"], e["path"], e["status"]) for e in access] == [
        ("req-7", "GET", "/healthz", 200),
        ("req-8", "GET", "/nowhere", 404),
    ]
    assert all(isinstance(e["duration_ms"], int | float) for e in access)
    text = log_stream.getvalue()
    assert VIN not in text
    assert "a@b.example" not in text
    assert "?" not in text


async def test_personal_data_in_path_is_masked_in_the_log(
    aiohttp_client: MakeClient, log_stream: io.StringIO
) -> None:
    client = await aiohttp_client(build_app())
    await client.get(f"/vehicles/{VIN}")
    assert VIN not in log_stream.getvalue()
    assert "/vehicles/[vin]" in log_stream.getvalue()


async def test_hsts_only_over_https() -> None:
    plain = web.Response()
    await add_security_headers(make_mocked_request("GET", "/"), plain)
    assert "Strict-Transport-Security" not in plain.headers
    secure = web.Response()
    tls = ssl.create_default_context()
    await add_security_headers(make_mocked_request("GET", "/", sslcontext=tls), secure)
    assert secure.headers["Strict-Transport-Security"] == HSTS
