"""The one source of "now": a controllable clock.

Everything that depends on time (grant validity, retention, token and code
lifetimes, SCC and certification expiry, retry schedules) asks a :class:`Clock`,
so tests move time instead of sleeping. Every datetime is UTC-aware.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = ensure_utc(start) if start else datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("a clock does not run backwards")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = ensure_utc(when)


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive datetime is refused, never guessed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """Parse an RFC 3339 instant (``Z`` or an offset is required)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return ensure_utc(value)


def format_instant(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a ``Z``."""
    return ensure_utc(value).isoformat().replace("+00:00", "Z")
