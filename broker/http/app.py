"""Build the aiohttp application: limits, middlewares and the health endpoints.

``create_app`` returns the application before start-up, so the composition
root can add the routes of every other feature to it. Nothing here does I/O at
import time or keeps global state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from broker.http.middleware import REQUEST_ID, install
from broker.http.openapi import API_DESCRIPTION, ApiDescription, json_content, problem, route
from broker.http.problems import problem_response
from broker.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
READINESS_TIMEOUT_SECONDS = 5.0

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[None]]


def create_app(*, settings: Settings, readiness: Readiness, version: str) -> web.Application:
    """An application with the broker's middlewares, ``/healthz`` and ``/readyz``.

    ``readiness`` raises when the broker cannot serve (database down, ...).
    """
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[API_DESCRIPTION] = ApiDescription(title="Vehicle data broker", version=version)
    install(app)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": version})

    async def readyz(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                await readiness()
        except Exception:
            log.warning("readiness check failed", exc_info=True)
            return problem_response(
                503,
                title="Not ready",
                detail="The broker cannot serve requests yet.",
                type_="urn:vehicle-data-broker:problem:not_ready",
                request_id=request.get(REQUEST_ID),
            )
        return web.json_response({"status": "ready"})

    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    route(
        app,
        "GET",
        "/healthz",
        healthz,
        summary="Liveness: the process answers",
        tag="operations",
        responses={200: json_content(status, "The process is alive.")},
    )
    route(
        app,
        "GET",
        "/readyz",
        readyz,
        summary="Readiness: the database answers",
        tag="operations",
        responses={
            200: json_content(status, "Ready to serve."),
            503: problem("Not ready (the database does not answer)."),
        },
    )
    return app
