"""Find canaries in what left the broker: bodies, headers, and every encoded segment in them.

A leak may hide in encoding: a cursor that is base64 of a record id, a JWT whose
payload names a vehicle, a ``Link`` header with percent-escapes, a JSON string
with ``\\u`` escapes. :func:`surfaces` unfolds one message into every text it
carries: the raw text, its percent-decoding, the JSON-decoded strings, and the
decoding of every base64, base64url or JWT segment found in any of them (again
unfolded, to a small depth). :class:`Canaries` then says which named canary
appears in which form.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

#: A run that could be base64 or base64url (JWT segments are split on ``.`` first).
_B64 = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")
_DEPTH = 3


def _decode_b64(segment: str) -> str | None:
    text = segment.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw.decode("latin-1") if raw else None


def _json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)
    elif value is not None and not isinstance(value, bool):
        yield json.dumps(value)


def surfaces(texts: Iterable[str], depth: int = _DEPTH) -> list[str]:
    """Every text the given texts carry, decoded as far as ``depth`` levels."""
    seen: set[str] = set()
    out: list[str] = []
    todo = [(text, 0) for text in texts]
    while todo:
        text, level = todo.pop()
        if text in seen:
            continue
        seen.add(text)
        out.append(text)
        if level >= depth:
            continue
        unquoted = unquote(text)
        if unquoted != text:
            todo.append((unquoted, level + 1))
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            todo.extend((s, level + 1) for s in _json_strings(parsed))
        for match in _B64.finditer(text):
            for segment in match.group().split("."):
                decoded = _decode_b64(segment) if len(segment) >= 12 else None
                if decoded is not None:
                    todo.append((decoded, level + 1))
    return out


def message_texts(body: bytes, headers: Mapping[str, str]) -> list[str]:
    """The texts of one HTTP message: its body and each header value (names are fixed)."""
    texts = [body.decode("utf-8", errors="replace")]
    texts.extend(str(value) for value in headers.values())
    return texts


@dataclass
class Canaries:
    """Named canaries, each with the forms it may take (matched case-insensitively)."""

    forms: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(self, name: str, *forms: str) -> None:
        self.forms[name] = tuple(f.lower() for f in forms if f)

    def found(self, texts: Iterable[str]) -> set[str]:
        """The names of the canaries that appear in any of ``texts`` (already unfolded)."""
        lowered = [text.lower() for text in texts]
        return {
            name
            for name, forms in self.forms.items()
            if any(form in text for text in lowered for form in forms)
        }

    def scan(self, body: bytes, headers: Mapping[str, str]) -> set[str]:
        return self.found(surfaces(message_texts(body, headers)))
