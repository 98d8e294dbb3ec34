"""The identifier index: keyed hashes of every customer's identifiers, matched in free text."""

from __future__ import annotations

from broker.protection.identifiers import (
    IdentifierHasher,
    IdentifierIndex,
    customer_identifiers,
    derive_index_key,
    index_form,
)

HASHER = IdentifierHasher(derive_index_key(bytes(range(32))))


def index_of(*identifiers: str) -> IdentifierIndex:
    entries = HASHER.entries(identifiers)
    return IdentifierIndex(
        HASHER, frozenset(e.digest for e in entries), max(e.words for e in entries)
    )


def spans(index: IdentifierIndex, text: str, keep: frozenset[str] = frozenset()) -> list[str]:
    return [text[start:end] for start, end in index.matches(text, keep)]


def test_entries_hold_no_clear_text_and_depend_on_the_master_key() -> None:
    [entry] = HASHER.entries(["Anna de Vries"])
    assert entry.words == 3
    assert "anna" not in entry.digest.lower()
    other = IdentifierHasher(derive_index_key(bytes(range(1, 33))))
    assert other.entries(["Anna de Vries"]) != {entry}
    assert HASHER.entries(["x", " "]) == set()  # a single character identifies no one


def test_identifiers_match_as_whole_words_whatever_case_spacing_and_width() -> None:
    index = index_of("Anna de Vries", "Prinsengracht 263", "anna.devries@example.nl")
    text = "ANNA  de vries lives at prinsengracht 263; mail Anna.DeVries@Example.NL."
    assert spans(index, text) == ["ANNA  de vries", "prinsengracht 263", "Anna.DeVries@Example.NL"]
    assert spans(index, "Annabel de Vriesland") == []
    assert spans(index, "Ｐｒｉｎｓｅｎｇｒａｃｈｔ 263") == [
        "Ｐｒｉｎｓｅｎｇｒａｃｈｔ 263"
    ]  # NFKC


def test_a_phone_written_in_groups_is_found() -> None:
    index = index_of("+31201234567")
    assert spans(index, "call +31 20 123 4567 now") == ["31 20 123 4567"]
    assert spans(index, "call 31201234567") == ["31201234567"]


def test_kept_identifiers_are_skipped_whole() -> None:
    index = index_of("Anna de Vries", "anna")
    keep = frozenset({index_form("Anna de Vries")})
    assert spans(index, "Anna de Vries and anna", keep) == ["anna"]


def test_a_customer_is_indexed_by_login_name_street_email_and_phone_not_by_town() -> None:
    contact = {
        "name": "Bram Jansen",
        "street": "Oudegracht 158",
        "city": "Utrecht",
        "postal_code": "3511 AZ",
        "email": "bram@example.nl",
        "phone": "+31301234567",
    }
    assert customer_identifiers("bram", contact) == [
        "bram", "Bram Jansen", "Oudegracht 158", "bram@example.nl", "+31301234567"
    ]  # fmt: skip
