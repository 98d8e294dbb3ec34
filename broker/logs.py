"""Structured, redacted logging on the standard library.

One JSON object per line (or a plain text line), each stamped with the id of
the request it belongs to, and every record scrubbed of personal data first:
VINs, e-mail addresses and positions are masked as ``[vin]``, ``[email]`` and
``[position]`` in the message, its arguments, extra fields and tracebacks.
Timestamps are RFC 3339 UTC (https://www.rfc-editor.org/rfc/rfc3339).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from broker.errors import ConfigurationError

LogFormat = Literal["json", "text"]

_EMAIL = re.compile(r"[^\s@\"<>()\[\],;:\\]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_VIN = re.compile(r"(?<![A-Za-z0-9])[A-HJ-NPR-Z0-9]{17}(?![A-Za-z0-9])", re.IGNORECASE)
_POSITION = re.compile(r"(?<![\d.])[-+]?\d+\.\d{4,}")

_request_id: ContextVar[str | None] = ContextVar("broker_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_BLANK_RECORD = logging.LogRecord("", 0, "", 0, "", None, None)
_RECORD_FIELDS = frozenset(_BLANK_RECORD.__dict__) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
}

_HANDLER_MARK = "_broker_handler"


def bind_request_id(value: str | None) -> Token[str | None]:
    """Make ``value`` the request id of every record logged in this context."""
    return _request_id.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    """Undo the :func:`bind_request_id` call that returned ``token``."""
    _request_id.reset(token)


def current_request_id() -> str | None:
    """The request id bound to the current context, if any."""
    return _request_id.get()


def redact(text: str) -> str:
    """Mask e-mail addresses, VINs and coordinate-like numbers in ``text``."""
    text = _EMAIL.sub("[email]", text)
    text = _VIN.sub("[vin]", text)
    return _POSITION.sub("[position]", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if redact(repr(value)) == repr(value) else "[position]"
    if isinstance(value, Mapping):
        return {redact(str(key)): _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    return redact(str(value))


def redact_record(record: logging.LogRecord) -> None:
    """Scrub ``record`` in place; calling it again changes nothing."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string must not leak its arguments raw
        message = f"{record.msg!s} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    request_id = getattr(record, "request_id", None)
    if isinstance(request_id, str):
        record.request_id = redact(request_id)
    for key in extra_fields(record):
        setattr(record, key, _redact_value(record.__dict__[key]))


def extra_fields(record: logging.LogRecord) -> list[str]:
    """Names of the attributes the caller added through ``extra``."""
    return [key for key in record.__dict__ if key not in _RECORD_FIELDS]


class RequestIdFilter(logging.Filter):
    """Stamp each record with the request id bound to the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class RedactionFilter(logging.Filter):
    """Mask personal data in every record before any formatter sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    instant = datetime.fromtimestamp(record.created, UTC)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.msg,
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        for key in extra_fields(record):
            entry.setdefault(key, record.__dict__[key])
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """A human-readable line: ts level logger [request_id] msg key=value..."""

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)
        request_id = getattr(record, "request_id", None) or current_request_id() or "-"
        parts = [_timestamp(record), record.levelname, record.name, f"[{request_id}]", record.msg]
        parts += [f"{key}={record.__dict__[key]}" for key in extra_fields(record)]
        line = " ".join(_one_line(str(part)) for part in parts)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _one_line(text: str) -> str:
    """Escape line breaks so a value cannot forge a log line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def configure_logging(level: str, fmt: LogFormat | str, stream: TextIO | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr), redacted and formatted.

    Idempotent: a second call replaces the handler installed by the first.
    aiohttp's own access log (which records query strings) is silenced; the
    broker writes its own access line without them. Alembic logs below WARNING
    only at DEBUG.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigurationError(f"unknown log level {level!r}")
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif fmt == "text":
        formatter = TextFormatter()
    else:
        raise ConfigurationError(f"unknown log format {fmt!r}; expected 'json' or 'text'")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactionFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Alembic's chatter (plugins, dialect) only when debugging; the broker logs the
    # migration it ran itself (broker.store.migrate).
    debugging = numeric <= logging.DEBUG
    logging.getLogger("alembic").setLevel(logging.NOTSET if debugging else logging.WARNING)
