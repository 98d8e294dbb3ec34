"""Data minimisation (GDPR Art. 5(1)(c)): keep only the fields a contract shares.

A record keeps a key only when the contract lists it as a field of the record's
category, and only a flat value: a string, a number, a boolean, null, or a list
of those. Nested objects, lists of lists and anything that is not JSON (a NaN,
an infinity, a date object) are dropped, whatever key they sit under.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

_MISSING = object()


def minimise(data: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The contract's ``fields`` of ``data`` holding flat JSON values; nothing else."""
    allowed = frozenset(fields)
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in allowed:
            continue
        flat = _flat_value(value)
        if flat is not _MISSING:
            kept[key] = flat
    return kept


def _flat_value(value: Any) -> Any:
    """``value`` if flat JSON, a list keeping only its flat scalar items, or a marker to drop."""
    if is_scalar(value):
        return value
    if isinstance(value, list | tuple):
        return [item for item in value if is_scalar(item)]
    return _MISSING


def is_scalar(value: Any) -> bool:
    """A JSON string, boolean, null, or finite number."""
    if value is None or isinstance(value, str | bool | int):
        return True
    return isinstance(value, float) and math.isfinite(value)
