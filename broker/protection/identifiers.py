"""Every customer's identifiers, known by keyed hash only: the index free text is checked against.

The gate knows the clear identifiers of a release's own data subjects (it decrypts
their contact for the release). Free text may also name *another* customer, whose
contact it has no reason to decrypt: decrypting every contact per release would
cost one unwrap per customer and keep them all in memory in clear. So every
customer's identifiers (name, street, e-mail, phone, login) are kept as an index
of keyed hashes instead:

- an identifier is normalised to its words (:func:`words`: Unicode NFKC, case
  folded, split into runs of letters and digits, joined by ``.@'+-`` inside a word,
  so ``Anna  de Vries`` and ``anna de vries`` are one identifier) and hashed with
  HMAC-SHA256 under a key derived from the master key (:func:`derive_index_key`);
  the store keeps only the digest and the word count, never the clear text, and
  without the master key the digests cannot be tested against guesses;
- where contacts are written the customer's entries are replaced, and erasing the
  customer deletes them;
- the gate loads the digests once per index version (row count, largest id) and
  hands an :class:`IdentifierIndex` (digests only) to protection, which checks
  every word n-gram of a free-text value (up to the longest identifier's word
  count) and every run of digit groups (a phone written ``+31 20 123 4567``).

The cost is a few HMACs per word of free text, paid only by values that are
scrubbed. An identifier written differently (a national phone format, a name
without its middle part) is not matched by the index; the shape patterns of
:mod:`.scrub` still catch every e-mail address and international phone number.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_HKDF_SALT: Final = b"vehicle-data-broker/identifier-index/v1"
_HKDF_INFO: Final = b"identifier-index"

#: A word: letters and digits, with ``. @ ' + -`` (and the typographic apostrophe) inside.
_WORD: Final = re.compile(r"[^\W_]+(?:[.@'\u2019+-][^\W_]+)*")
#: Digit groups joined into one candidate: at most this many digits (E.164) and groups.
_MAX_DIGITS: Final = 15
_MAX_GROUPS: Final = 6


class IdentifierKind(StrEnum):
    """The kinds of identifier free text is scrubbed of; a contract may release some (see
    :func:`broker.protection.protect.released_kinds`)."""

    NAME = "name"  # customer.contact.name
    ADDRESS = "address"  # customer.contact.street, house_number, postal_code, city
    EMAIL = "email"  # customer.contact.email, and anything shaped like an e-mail address
    PHONE = "phone"  # customer.contact.phone, and anything shaped like a phone number
    LOGIN = "login"  # the customer's login: no contract releases it
    VIN = "vin"  # a vehicle's VIN, and anything shaped like one
    COORDINATE = "coordinate"  # a decimal with four or more decimals: an exact position


#: The kind of each contact field.
CONTACT_KINDS: Final = {
    "name": IdentifierKind.NAME,
    "street": IdentifierKind.ADDRESS,
    "house_number": IdentifierKind.ADDRESS,
    "postal_code": IdentifierKind.ADDRESS,
    "city": IdentifierKind.ADDRESS,
    "email": IdentifierKind.EMAIL,
    "phone": IdentifierKind.PHONE,
}
#: The contact fields every customer is indexed by: what names one person, not a town.
INDEXED_CONTACT_FIELDS: Final = ("name", "street", "email", "phone")


def derive_index_key(master_key: bytes) -> bytes:
    """The 32-byte key of the identifier index (HKDF-SHA256, a label of its own)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO)
    return hkdf.derive(master_key)


def words(text: str) -> tuple[str, ...]:
    """The normalised words of ``text``."""
    return tuple(_normal(m.group()) for m in _WORD.finditer(text))


def _normal(word: str) -> str:
    return unicodedata.normalize("NFKC", word).casefold()


def index_form(text: str) -> str:
    """The normalised form an identifier is hashed in (its words, one space apart)."""
    return " ".join(words(text))


def customer_identifiers(login: str | None, contact: dict[str, object]) -> list[str]:
    """What the index knows a customer by: login, name, street, e-mail and phone."""
    found = [login] if login else []
    found += [v for f in INDEXED_CONTACT_FIELDS if isinstance(v := contact.get(f), str) and v]
    return found


@dataclass(frozen=True)
class IndexEntry:
    """One identifier of a customer as stored: its digest (hex) and word count."""

    digest: str
    words: int


class IdentifierHasher:
    """Keyed hashes of normalised identifiers."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("an identifier index key has at least 32 bytes")
        self._key = bytes(key)

    def digest(self, form: str) -> str:
        """The hex digest of an identifier already in :func:`index_form`."""
        return hmac.new(self._key, form.encode("utf-8"), hashlib.sha256).hexdigest()

    def entries(self, identifiers: Iterable[str]) -> set[IndexEntry]:
        """The index entries of identifiers (a single character never identifies anyone)."""
        found = set()
        for identifier in identifiers:
            form = index_form(identifier)
            if len(form) > 1:
                found.add(IndexEntry(self.digest(form), form.count(" ") + 1))
        return found

    def __repr__(self) -> str:
        return "IdentifierHasher(...)"


@dataclass(frozen=True)
class IdentifierIndex:
    """The digests of every customer's identifiers, and how to look text up in them."""

    hasher: IdentifierHasher
    digests: frozenset[str]
    max_words: int

    def matches(self, text: str, keep: frozenset[str] = frozenset()) -> Iterator[tuple[int, int]]:
        """The spans of ``text`` that are an indexed identifier, left to right, longest first.

        ``keep``: forms (:func:`index_form`) not to report (identifiers the recipient
        may see).
        """
        if not self.digests:
            return
        tokens = [(m.start(), m.end(), _normal(m.group())) for m in _WORD.finditer(text)]
        i = 0
        while i < len(tokens):
            found = self._match_at(tokens, i, keep)
            if found is None:
                i += 1
                continue
            end, kept = found
            if not kept:
                yield tokens[i][0], tokens[end - 1][1]
            i = end  # a kept identifier is skipped whole: no part of it is matched again

    def _match_at(
        self, tokens: list[tuple[int, int, str]], i: int, keep: frozenset[str]
    ) -> tuple[int, bool] | None:
        """Where the identifier starting at word ``i`` ends, and whether it is kept."""
        for n in range(min(self.max_words, len(tokens) - i), 0, -1):
            form = " ".join(t[2] for t in tokens[i : i + n])
            if form in keep:
                return i + n, True
            if self.hasher.digest(form) in self.digests:
                return i + n, False
        digits = ""
        for j in range(i, min(i + _MAX_GROUPS, len(tokens))):
            if not tokens[j][2].isdigit():
                break
            digits += tokens[j][2]
            if len(digits) > _MAX_DIGITS:
                break
            if j > i and (digits in keep or self.hasher.digest(digits) in self.digests):
                return j + 1, digits in keep
        return None
