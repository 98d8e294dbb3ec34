"""The per-field transforms of a contract: keep, drop, pseudonymise, round, bucket, generalise.

A transform names its field as ``<category>.<field>``. Whatever cannot be
applied as written (rounding a string, bucketing text that is no date, a
generalisation of anything but a coordinate) drops the field: unknown means
deny. Coordinates are generalised together, as a point, by the protection step
(``broker.protection.protect``), never one by one here.

Time buckets: a duration of whole months or years floors a date to the start of
its calendar period (``P3M``: quarters); any other duration floors to a multiple
of its length counted from Monday 1970-01-05T00:00Z, so days start at midnight
and weeks on Monday.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Final

from broker.clock import ensure_utc, format_instant, parse_instant
from broker.domain.contracts import IsoDuration, Transform, TransformOp
from broker.protection.keys import Pseudonymiser


class _Dropped:
    """The marker of a value the transform removes (one instance: :data:`DROPPED`)."""

    def __repr__(self) -> str:
        return "DROPPED"


#: Returned when a transform removes the field.
DROPPED: Final = _Dropped()

#: The fields generalised as one point.
COORDINATE_FIELDS: Final = ("latitude", "longitude")

_ORIGIN: Final = datetime(1970, 1, 5, tzinfo=UTC)  # a Monday
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def apply_transform(value: Any, transform: Transform, pseudonymiser: Pseudonymiser) -> Any:
    """``value`` after ``transform``, or :data:`DROPPED`. Lists are transformed item by item."""
    if transform.op is TransformOp.KEEP:
        return value
    if transform.op is TransformOp.DROP or transform.op is TransformOp.GENERALISE:
        return DROPPED
    if isinstance(value, list):
        items = [_apply_scalar(item, transform, pseudonymiser) for item in value]
        return DROPPED if any(item is DROPPED for item in items) else items
    return _apply_scalar(value, transform, pseudonymiser)


def _apply_scalar(value: Any, transform: Transform, pseudonymiser: Pseudonymiser) -> Any:
    if value is None:
        return None
    if transform.op is TransformOp.PSEUDONYMISE:
        return pseudonymise_value(value, pseudonymiser)
    if transform.op is TransformOp.ROUND:
        return round_number(value, transform.decimals or 0)
    if transform.op is TransformOp.BUCKET:
        size = transform.size
        if isinstance(size, IsoDuration):
            return bucket_time(value, size)
        if isinstance(size, int | float) and not isinstance(size, bool):
            return bucket_number(value, size)
    return DROPPED


def is_number(value: Any) -> bool:
    """A finite int or float that is not a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def pseudonymise_value(value: Any, pseudonymiser: Pseudonymiser) -> Any:
    """The identifier pseudonym of the value's text (``true``/``false`` for booleans)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        return DROPPED
    return pseudonymiser.identifier(text)


def round_number(value: Any, decimals: int) -> Any:
    """``value`` rounded to ``decimals`` (an int when ``decimals`` <= 0), or DROPPED."""
    if not is_number(value):
        return DROPPED
    if decimals <= 0:
        return int(round(value, decimals))
    return round(float(value), decimals) if isinstance(value, float) else value


def bucket_number(value: Any, size: float) -> Any:
    """The lower bound of the ``size``-wide bucket holding ``value``, or DROPPED."""
    if not is_number(value) or not is_number(size) or size <= 0:
        return DROPPED
    if isinstance(value, int) and isinstance(size, int):
        return (value // size) * size
    try:
        step = Decimal(repr(size))
        floored = (Decimal(repr(value)) / step).to_integral_value(rounding=ROUND_FLOOR) * step
    except InvalidOperation:
        return DROPPED
    return int(floored) if isinstance(size, int) else float(floored)


def bucket_time(value: Any, size: IsoDuration) -> Any:
    """A date or RFC 3339 instant floored to its ``size`` bucket, in the same form; or DROPPED."""
    if not isinstance(value, str):
        return DROPPED
    try:
        if _DATE.fullmatch(value):
            day = date.fromisoformat(value)
            start = floor_instant(datetime(day.year, day.month, day.day, tzinfo=UTC), size)
            return start.date().isoformat()
        return format_instant(floor_instant(parse_instant(value), size))
    except ValueError:
        return DROPPED


def floor_instant(when: datetime, size: IsoDuration) -> datetime:
    """The start of the ``size`` bucket holding ``when`` (UTC)."""
    when = ensure_utc(when)
    months = size.years * 12 + size.months
    fixed = (size.weeks, size.days, size.hours, size.minutes, size.seconds)
    if months and not any(fixed):
        index = (when.year * 12 + when.month - 1) // months * months
        return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
    seconds = max(1, int(size.nominal_seconds))
    elapsed = math.floor((when - _ORIGIN).total_seconds())
    return _ORIGIN + timedelta(seconds=elapsed // seconds * seconds)


def ceil_instant(when: datetime, size: IsoDuration) -> datetime:
    """The end of the ``size`` bucket holding ``when``; ``when`` itself if it starts one."""
    when = ensure_utc(when)
    start = floor_instant(when, size)
    if start == when:
        return when
    months = size.years * 12 + size.months
    fixed = (size.weeks, size.days, size.hours, size.minutes, size.seconds)
    if months and not any(fixed):
        index = start.year * 12 + start.month - 1 + months
        return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return start + timedelta(seconds=max(1, int(size.nominal_seconds)))


def coarse_instant(when: datetime, precision: IsoDuration | None) -> datetime:
    """``when`` floored to a contract's time precision (None: exact, unchanged)."""
    return when if precision is None else floor_instant(when, precision)


def coarse_range(
    since: datetime, until: datetime, precision: IsoDuration | None
) -> tuple[datetime, datetime]:
    """``[since, until)`` widened to whole ``precision`` buckets (None: unchanged), so a
    range's bounds tell nothing finer than the precision."""
    if precision is None:
        return since, until
    return floor_instant(since, precision), ceil_instant(until, precision)
