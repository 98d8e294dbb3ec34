"""The customer-facing web pages: login, logout and what later pages build on.

The package is added to the broker's aiohttp application by
:func:`broker.web.routes.add_web_routes`. What every page shares (the broker
parts it reads at request time, the CSRF key, the templates and the message
catalogues) lives in one :class:`WebContext` in the application's state, so
no module here keeps global state and nothing does I/O at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from aiohttp import web

from broker.clock import Clock
from broker.settings import Settings
from broker.store.database import Database

if TYPE_CHECKING:
    from jinja2 import Environment

    from broker.web.i18n import Catalogues, Translator


class WebRuntime(Protocol):
    """What the pages need from the running broker (``broker.bootstrap.Broker`` has it)."""

    @property
    def database(self) -> Database: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def settings(self) -> Settings: ...


@dataclass(frozen=True)
class WebContext:
    """Everything the pages share, built once when the routes are added."""

    runtime: Callable[[], WebRuntime]
    csrf_key: bytes
    templates: Environment
    catalogues: Catalogues


WEB = web.AppKey("web", WebContext)


class PageError(Exception):
    """A refusal shown to the customer as a page (see ``broker.web.render``).

    Subclasses name the status and the catalogue keys of the page's title and
    message; ``params`` fill the message, ``headers`` go on the response.
    """

    status: ClassVar[int] = 400
    title_key: ClassVar[str] = "csrf.title"
    message_key: ClassVar[str] = "csrf.message"

    def __init__(
        self,
        reason: str,
        *,
        params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.params = dict(params or {})
        self.headers = dict(headers or {})

    def message(self, t: Translator) -> str:
        """The page's message in the language of ``t``."""
        return t(self.message_key, **self.params)


def web_context(request: web.Request) -> WebContext:
    """The shared context of the application serving ``request``."""
    return request.config_dict[WEB]
