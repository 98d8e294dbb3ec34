"""Messages in Dutch and English, and choosing the language of a page.

The catalogues are JSON files in ``messages/<language>/``: each feature adds
its own file (``login.json``, ...) in every language folder, a key may appear
in only one file, and every language has exactly the same keys.

A page's language is, in order: a ``?lang=nl|en`` override (remembered in a
cookie), the remembered override, the logged-in customer's
preference, the browser's ``Accept-Language`` (RFC 9110 §12.5.4, q-values
honoured), and English.

https://www.rfc-editor.org/rfc/rfc9110#section-12.5.4
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.domain.parties import Language

DEFAULT_LANGUAGE = Language.EN
LANG_QUERY = "lang"
LANG_COOKIE = "broker_lang"
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600
MESSAGES_DIR = Path(__file__).resolve().parent / "messages"

_MAX_ACCEPT_LANGUAGE = 512
_MAX_RANGES = 32
_LANGUAGE_RANGE = re.compile(r"\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def as_language(value: str | None) -> Language | None:
    """``value`` as a supported language, or None."""
    if value is None:
        return None
    try:
        return Language(value.strip().lower())
    except ValueError:
        return None


def parse_accept_language(header: str | None) -> list[tuple[str, float]]:
    """The language ranges of an ``Accept-Language`` header, best first.

    Malformed entries are skipped; ranges with equal weight keep their order.
    """
    if not header or len(header) > _MAX_ACCEPT_LANGUAGE:
        return []
    ranges: list[tuple[str, float]] = []
    for entry in header.split(",")[:_MAX_RANGES]:
        tag, _, params = entry.strip().partition(";")
        tag = tag.strip()
        if not _LANGUAGE_RANGE.fullmatch(tag):
            continue
        weight = 1.0
        if params:
            name, _, value = params.strip().partition("=")
            if name.strip().lower() != "q" or not _QVALUE.fullmatch(value.strip()):
                continue
            weight = float(value)
        ranges.append((tag.lower(), weight))
    return sorted(ranges, key=lambda item: -item[1])


def negotiate(header: str | None) -> Language | None:
    """The supported language the browser prefers most, or None if it accepts none."""
    refused: set[Language] = set()
    for tag, weight in parse_accept_language(header):
        if tag == "*":
            candidate: Language | None = DEFAULT_LANGUAGE
        else:
            candidate = as_language(tag.split("-", 1)[0])
        if candidate is None:
            continue
        if weight == 0:
            refused.add(candidate)
        elif candidate not in refused:
            return candidate
    return None


def choose_language(
    *,
    override: str | None,
    remembered: str | None,
    preference: str | None,
    accept_language: str | None,
) -> Language:
    """The language of a page, by the order in the module docstring."""
    for explicit in (override, remembered, preference):
        language = as_language(explicit)
        if language is not None:
            return language
    return negotiate(accept_language) or DEFAULT_LANGUAGE


@dataclass(frozen=True)
class Translator:
    """The messages of one language: ``t("login.title")``, ``t("nav.logged_in_as", login=x)``."""

    language: Language
    messages: Mapping[str, str]

    def __call__(self, key: str, **params: object) -> str:
        text = self.messages[key]
        return text.format(**params) if params else text

    def plural(self, key: str, n: int) -> str:
        """``key.one`` for 1, ``key.other`` otherwise (both catalogues use this rule)."""
        return self(f"{key}.one" if n == 1 else f"{key}.other", n=n)


def _read_language(folder: Path) -> dict[str, str]:
    messages: dict[str, str] = {}
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ValueError(f"no message files in {folder}")
    for path in files:
        data = json.loads(path.read_text("utf-8"))
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError(f"{path} must map message keys to strings")
        clashes = sorted(set(data) & set(messages))
        if clashes:
            raise ValueError(f"{path} repeats keys of another file: {clashes}")
        messages.update(data)
    return messages


@dataclass(frozen=True)
class Catalogues:
    """The catalogue of every supported language."""

    messages: Mapping[Language, Mapping[str, str]]

    @classmethod
    def load(cls, directory: Path = MESSAGES_DIR) -> Catalogues:
        """Read ``<language>/*.json`` for every language; refuse gaps and clashes."""
        messages = {language: _read_language(directory / language.value) for language in Language}
        reference = set(messages[DEFAULT_LANGUAGE])
        for language, catalogue in messages.items():
            if set(catalogue) != reference:
                difference = sorted(set(catalogue) ^ reference)
                raise ValueError(
                    f"the {language.value} messages have other keys than the "
                    f"{DEFAULT_LANGUAGE.value} ones: {difference}"
                )
        return cls(messages)

    def translator(self, language: Language) -> Translator:
        return Translator(language, self.messages[language])
