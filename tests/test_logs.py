"""broker.logs: JSON lines, the request-id context, idempotent set-up, and redaction."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import ConfigurationError
from broker.logs import (
    JsonFormatter,
    RedactionFilter,
    RequestIdFilter,
    TextFormatter,
    bind_request_id,
    configure_logging,
    current_request_id,
    redact,
    reset_request_id,
)
from broker.store.database import Database
from broker.store.migrate import head_revision, upgrade

VIN = "WF0XXXGCDX1234567"
EMAIL = "jane.doe+car@example.co.uk"
POSITION = "52.37403"

vins = st.from_regex(r"[A-HJ-NPR-Z0-9]{17}", fullmatch=True)
coordinates = st.builds(
    lambda value, places: f"{value:.{places}f}",
    st.floats(min_value=-180, max_value=180, allow_nan=False),
    st.integers(min_value=4, max_value=9),
)
noise = st.text(max_size=40)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Give the test the root logger and put it back as it was afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access_level = logging.getLogger("aiohttp.access").level
    alembic_level = logging.getLogger("alembic").level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access_level)
    logging.getLogger("alembic").setLevel(alembic_level)


def format_json(msg: str, args: Any = None, **extra: Any) -> str:
    """Run a record through the redaction filter and the JSON formatter."""
    record = logging.LogRecord("broker.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    assert RequestIdFilter().filter(record)
    assert RedactionFilter().filter(record)
    return JsonFormatter().format(record)


def plant(secret: str, before: str, after: str) -> str:
    return f"{before} {secret} {after}"


def test_json_line_has_the_documented_fields() -> None:
    token = bind_request_id("req-1")
    try:
        line = format_json("hello %s", ("world",), grant="g-1", count=3)
    finally:
        reset_request_id(token)
    entry = json.loads(line)
    assert entry["msg"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "broker.test"
    assert entry["request_id"] == "req-1"
    assert entry["grant"] == "g-1"
    assert entry["count"] == 3
    assert entry["ts"].endswith("Z")
    assert datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).utcoffset() is not None
    assert "\n" not in line


def test_request_id_context_binds_and_resets() -> None:
    assert current_request_id() is None
    token = bind_request_id("abc")
    assert current_request_id() == "abc"
    reset_request_id(token)
    assert current_request_id() is None


def test_masks_personal_data_in_message_args_and_extra() -> None:
    line = format_json(f"vehicle {VIN} owned by {EMAIL} at {POSITION},4.89")
    assert VIN not in line
    assert EMAIL not in line
    assert POSITION not in line
    assert "[vin]" in line
    assert "[email]" in line
    assert "[position]" in line

    line = format_json("vehicle %s owned by %s at %s", (VIN, EMAIL, 52.37403))
    entry = json.loads(line)
    assert entry["msg"] == "vehicle [vin] owned by [email] at [position]"

    line = format_json(
        "delivery", None, vin=VIN, owner={"email": EMAIL}, lat=52.37403, path=["x", VIN]
    )
    entry = json.loads(line)
    assert entry["vin"] == "[vin]"
    assert entry["owner"] == {"email": "[email]"}
    assert entry["lat"] == "[position]"
    assert entry["path"] == ["x", "[vin]"]


def test_leaves_ordinary_text_alone() -> None:
    text = "GET /healthz 200 1.5ms grant=g-42 version=0.1.0 at 2026-01-01T00:00:00.123Z"
    assert redact(text) == text


def test_masks_lowercase_vin_and_vin_in_request_id() -> None:
    assert redact(f"id={VIN.lower()}") == "id=[vin]"
    line = format_json("x", None, request_id=VIN)
    assert json.loads(line)["request_id"] == "[vin]"


def test_masks_exception_text_in_tracebacks() -> None:
    record = logging.LogRecord("broker.test", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise ValueError(f"no vehicle {VIN} for {EMAIL}")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "ValueError" in entry["exc"]
    assert VIN not in line
    assert EMAIL not in line


def test_text_format_is_one_redacted_line() -> None:
    record = logging.LogRecord(
        "broker.test", logging.INFO, __file__, 1, "a\nforged %s", (EMAIL,), None
    )
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert EMAIL not in line
    assert "[email]" in line


@given(vin=vins, email=st.emails(), position=coordinates, a=noise, b=noise, c=noise)
def test_no_planted_secret_survives(
    vin: str, email: str, position: str, a: str, b: str, c: str
) -> None:
    message = plant(vin, a, plant(email, b, plant(position, c, a)))
    for line in (
        format_json(message),
        format_json("%s|%s", (plant(vin, a, b), plant(email, b, c))),
        format_json("event", None, note=plant(vin, b, c), contact=[plant(email, a, c)]),
        format_json("event", None, where={"p": plant(position, a, b)}),
    ):
        for secret in (vin, email, position):
            assert secret not in line
            assert secret not in json.dumps(json.loads(line), ensure_ascii=False)


@pytest.mark.usefixtures("root_logging")
def test_configure_logging_is_idempotent_and_writes_json() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("broker.test").info("contact %s", EMAIL, extra={"vin": VIN})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["msg"] == "contact [email]"
    assert entry["vin"] == "[vin]"
    logging.getLogger("broker.test").debug("not at this level")
    assert len(stream.getvalue().splitlines()) == 1


@pytest.mark.usefixtures("root_logging")
def test_a_migration_is_one_broker_line_at_info_and_alembics_chatter_only_at_debug(
    tmp_path: Path,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    database = Database(f"sqlite:///{tmp_path / 'logs.sqlite3'}")
    try:
        upgrade(database)
        upgrade(database)  # already current: says nothing
    finally:
        database.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["msg"]) for e in lines] == [
        ("broker.store.migrate", "database schema migrated")
    ]
    assert lines[0]["from_revision"] is None and lines[0]["to_revision"] == head_revision()
    configure_logging("DEBUG", "json", stream=stream)
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    assert "Context impl" in stream.getvalue()


@pytest.mark.usefixtures("root_logging")
def test_configure_logging_refuses_unknown_settings() -> None:
    with pytest.raises(ConfigurationError):
        configure_logging("LOUD", "json")
    with pytest.raises(ConfigurationError):
        configure_logging("INFO", "xml")
