"""Free-text scrubbing: no identifier survives in a string a recipient sees.

Applied to free-text fields at every level, to every string value released at
the pseudonymised and anonymised levels, and to error messages, links and
headers. In this order:

1. identifiers the broker knows for a data subject (their VINs, names, e-mail
   addresses, logins, phone numbers, licence plates), matched case-insensitively
   anywhere in the text (whole words only when shorter than four characters);
2. identifiers of every other customer, by their keyed hashes
   (:class:`~broker.protection.identifiers.IdentifierIndex`), as whole words;
3. any e-mail address;
4. any international phone number (E.164, ``+`` and 7 to 15 digits);
5. any VIN-shaped token (ISO 3779: 17 characters of ``A-HJ-NPR-Z0-9``, as a word);
6. any decimal number with four or more decimals: an exact coordinate.

What the recipient may see passes: the subjects' identifiers the caller names as
``released`` (in passes 1 to 4), and coordinates when ``release_coordinates``.

A VIN becomes the vehicle reference the recipient may see (or ``[vin]``); other
identifiers become their pseudonym when the caller gives one, else a placeholder.
Each pass replaces in a single scan, so a replacement is never re-matched by
its own pass, and no replacement (``psn_`` pseudonyms, ``[placeholders]``) is
shaped like what a later pass looks for. Every pattern starts a match only at
the beginning of a run of its characters, so scrubbing stays linear in the
length of the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from broker.protection.identifiers import IdentifierIndex, index_form
from broker.protection.keys import normalise_identifier, normalise_vin

REDACTED: Final = "[redacted]"
VIN_PLACEHOLDER: Final = "[vin]"
EMAIL_PLACEHOLDER: Final = "[email]"
PHONE_PLACEHOLDER: Final = "[phone]"
POSITION_PLACEHOLDER: Final = "[position]"

#: Identifiers shorter than this are matched as whole words only; a single character never.
_SHORT: Final = 4

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-"
_DOMAIN = r"A-Za-z0-9_\u0080-\U0010ffff-"
# The lookbehinds start a match only where a run begins, keeping the scan linear.
EMAIL_PATTERN: Final = re.compile(rf"(?<![.{_ATEXT}])[.{_ATEXT}]+@[{_DOMAIN}]+(?:\.[{_DOMAIN}]+)*")
PHONE_PATTERN: Final = re.compile(r"(?<![\w+])\+[1-9](?:[ .-]?[0-9]){6,14}(?![0-9])")
VIN_PATTERN: Final = re.compile(r"(?<![A-Za-z0-9])[A-HJ-NPR-Z0-9]{17}(?![A-Za-z0-9])", re.I)
COORDINATE_PATTERN: Final = re.compile(r"(?<![0-9])[-+]?[0-9]+[.,][0-9]{4,}")


class Scrubber:
    """Scrubs strings for one recipient and one set of data subjects.

    ``vehicle_ref`` gives the reference a recipient may see for a VIN (None: none
    at all); ``identifier_ref`` the pseudonym of any other identifier, or None to
    remove identifiers instead. ``released``: identifiers among ``identifiers`` the
    recipient may see as they are; ``index``: every customer's identifiers, hashed.
    """

    def __init__(
        self,
        *,
        vins: Iterable[str],
        identifiers: Iterable[str],
        vehicle_ref: Callable[[str], str | None],
        identifier_ref: Callable[[str], str] | None,
        released: Iterable[str] = (),
        release_coordinates: bool = False,
        index: IdentifierIndex | None = None,
    ) -> None:
        self._vehicle_ref = vehicle_ref
        self._identifier_ref = identifier_ref
        vin_list = [v for v in vins if v.strip()]
        self._vins = {normalise_identifier(v) for v in vin_list}
        self._known = _known_pattern([*vin_list, *identifiers])
        released = [r for r in released if r.strip()]
        self._released = frozenset(normalise_identifier(r) for r in released)
        self._released_phones = frozenset(
            _phone_digits(r) for r in released if r.strip().startswith("+")
        )
        self._released_forms = frozenset(index_form(r) for r in released)
        self._release_coordinates = release_coordinates
        self._index = index if index is not None and index.digests else None

    def value(self, value: Any) -> Any:
        """A string scrubbed, a list scrubbed item by item; anything else unchanged."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def text(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(self._known_replacement, text)
        if self._index is not None:
            text = self._indexed(text, self._index)
        text = EMAIL_PATTERN.sub(self._email_replacement, text)
        text = PHONE_PATTERN.sub(self._phone_replacement, text)
        text = VIN_PATTERN.sub(lambda m: self._vin(m.group()), text)
        if self._release_coordinates:
            return text
        return COORDINATE_PATTERN.sub(POSITION_PLACEHOLDER, text)

    def _indexed(self, text: str, index: IdentifierIndex) -> str:
        parts, last = [], 0
        for start, end in index.matches(text, self._released_forms):
            parts += [text[last:start], self._identifier(text[start:end], REDACTED)]
            last = end
        return "".join(parts) + text[last:] if parts else text

    def _vin(self, vin: str) -> str:
        return self._vehicle_ref(normalise_vin(vin)) or VIN_PLACEHOLDER

    def _identifier(self, text: str, placeholder: str) -> str:
        return self._identifier_ref(text) if self._identifier_ref else placeholder

    def _known_replacement(self, match: re.Match[str]) -> str:
        found = match.group()
        if normalise_identifier(found) in self._vins:
            return self._vin(found)
        if normalise_identifier(found) in self._released:
            return found
        return self._identifier(found, REDACTED)

    def _email_replacement(self, match: re.Match[str]) -> str:
        if normalise_identifier(match.group()) in self._released:
            return match.group()
        return self._identifier(match.group(), EMAIL_PLACEHOLDER)

    def _phone_replacement(self, match: re.Match[str]) -> str:
        digits = _phone_digits(match.group())
        if digits in self._released_phones:
            return match.group()
        return self._identifier(digits, PHONE_PLACEHOLDER)


def _phone_digits(phone: str) -> str:
    return "+" + "".join(c for c in phone if c.isdigit())


def _known_pattern(identifiers: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern for all known identifiers, longest first, inner spaces flexible.

    Each is matched as written and case folded (``Straße`` also as ``strasse``).
    """
    forms = set()
    for identifier in identifiers:
        collapsed = " ".join(identifier.split())
        forms.update({collapsed, collapsed.casefold()})
    alternatives = []
    for identifier in sorted((f for f in forms if len(f) > 1), key=lambda i: (-len(i), i)):
        body = r"\s+".join(re.escape(part) for part in identifier.split())
        if len(identifier) < _SHORT:
            body = rf"(?<!\w){body}(?!\w)"
        alternatives.append(body)
    if not alternatives:
        return None
    return re.compile("|".join(alternatives), re.IGNORECASE)
