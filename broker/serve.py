"""``broker serve``: run the web application until interrupted."""

from __future__ import annotations

import logging

from aiohttp import web

from broker.bootstrap import create_web_app
from broker.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM (logging is set up by :mod:`broker.cli`)."""
    app = create_web_app(settings)
    log.info("broker listening", extra={"host": settings.host, "port": settings.port})
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
