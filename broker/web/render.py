"""Render a page: a Jinja2 template, in the visitor's language, as an HTML response.

Every page is ``text/html; charset=utf-8``, so the HTTP middleware gives it the
strict HTML Content-Security-Policy; templates therefore use no inline script
or style, and only assets under ``/static/``. Autoescaping is on for every
template. A :class:`~broker.web.PageError` raised by a page handler is shown as
``error.html`` with its status (:func:`page_error_middleware`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from yarl import URL

from broker.domain.parties import Language
from broker.web import PageError, web_context
from broker.web.csrf import csrf_field
from broker.web.i18n import (
    LANG_COOKIE,
    LANG_COOKIE_MAX_AGE,
    LANG_QUERY,
    Translator,
    as_language,
    choose_language,
)
from broker.web.sessions import current_session

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
HTML_CONTENT_TYPE = "text/html"

log = logging.getLogger(__name__)


def build_templates(directory: Path = TEMPLATES_DIR) -> Environment:
    """The template environment: autoescaped, and loud about undefined names."""
    return Environment(
        loader=FileSystemLoader(directory),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class LanguageLink:
    language: Language
    label: str
    url: str
    current: bool


async def page_translator(request: web.Request) -> Translator:
    """The visitor's language (see :mod:`broker.web.i18n` for the order)."""
    session = await current_session(request)
    language = choose_language(
        override=request.query.get(LANG_QUERY),
        remembered=request.cookies.get(LANG_COOKIE),
        preference=session.customer.language.value if session else None,
        accept_language=request.headers.get("Accept-Language"),
    )
    return web_context(request).catalogues.translator(language)


async def render(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    csrf_token: str | None = None,
    page_url: str | None = None,
    **values: Any,
) -> web.Response:
    """``template`` rendered for ``request`` as an HTML response.

    Every template sees ``t`` (the translator), ``lang``, ``customer`` (or
    None), ``csrf_token`` (the session's, unless one is given) and
    ``csrf_field()`` (the hidden field carrying it), ``session_csrf_field()``
    (the field carrying the session's token, for forms such as logout that
    always post as the session), ``language_links`` (built on ``page_url``, by
    default this page), and ``values``.
    """
    context = web_context(request)
    session = await current_session(request)
    t = await page_translator(request)
    session_token = session.csrf_token if session else ""
    token = csrf_token if csrf_token is not None else session_token
    html = context.templates.get_template(template).render(
        t=t,
        lang=t.language.value,
        customer=session.customer if session else None,
        csrf_token=token,
        csrf_field=lambda: _field(token),
        session_csrf_field=lambda: _field(session_token),
        language_links=_language_links(request, t, page_url),
        **values,
    )
    response = web.Response(
        status=status,
        text=html,
        content_type=HTML_CONTENT_TYPE,
        charset="utf-8",
        headers=dict(headers or {}),
    )
    remember_language(request, response)
    return response


def _field(token: str) -> Markup:
    return csrf_field(token) if token else Markup("")


def remember_language(request: web.Request, response: web.StreamResponse) -> None:
    """Keep a ``?lang=`` override in a cookie for the next pages."""
    override = as_language(request.query.get(LANG_QUERY))
    if override is not None:
        response.set_cookie(
            LANG_COOKIE,
            override.value,
            max_age=LANG_COOKIE_MAX_AGE,
            path="/",
            secure=True,
            httponly=True,
            samesite="Lax",
        )


def _language_links(
    request: web.Request, t: Translator, page_url: str | None
) -> list[LanguageLink]:
    base = URL(page_url) if page_url else request.rel_url
    if request.method != "GET" and not page_url:
        base = URL(request.path)
    return [
        LanguageLink(
            language=language,
            label=t(f"lang.{language.value}"),
            url=str(base.update_query({LANG_QUERY: language.value})),
            current=language is t.language,
        )
        for language in Language
    ]


async def error_page(request: web.Request, error: PageError) -> web.Response:
    """``error`` as a page with its status and headers."""
    t = await page_translator(request)
    return await render(
        request,
        "error.html",
        status=error.status,
        headers=error.headers,
        page_url=None if request.method == "GET" else "/",
        title=t(error.title_key),
        message=error.message(t),
    )


@web.middleware
async def page_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Show a :class:`~broker.web.PageError` as a page; everything else passes."""
    try:
        return await handler(request)
    except PageError as error:
        log.info(
            "page refused: %s",
            error.reason,
            extra={"status": error.status, "refusal": type(error).__name__},
        )
        return await error_page(request, error)
