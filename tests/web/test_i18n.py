"""broker.web.i18n: Accept-Language negotiation, the order of choice, the catalogues."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from broker.domain.parties import Language
from broker.store.customer_view import DISCLOSURE_KINDS, ELIGIBILITY
from broker.web.i18n import (
    MESSAGES_DIR,
    Catalogues,
    choose_language,
    negotiate,
    parse_accept_language,
)
from broker.web.render import TEMPLATES_DIR


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("nl", Language.NL),
        ("NL-be", Language.NL),
        ("en-US,en;q=0.9", Language.EN),
        ("fr, nl;q=0.5, en;q=0.4", Language.NL),
        ("en;q=0.1, nl;q=0.2", Language.NL),
        ("en;q=0.5, nl;q=0.5", Language.EN),  # equal weight: the header's order
        ("nl;q=0, *", Language.EN),
        ("*", Language.EN),
        ("nl;q=0", None),
        ("de, fr", None),
        ("nl;q=2, en", Language.EN),  # a malformed q-value drops its entry
        ("nl;q=abc", None),
        ("", None),
        (None, None),
        ("x" * 600, None),
    ],
)
def test_negotiate(header: str | None, expected: Language | None) -> None:
    assert negotiate(header) == expected


def test_parse_accept_language_sorts_by_weight() -> None:
    assert parse_accept_language("da, en-gb;q=0.8, en;q=0.7") == [
        ("da", 1.0),
        ("en-gb", 0.8),
        ("en", 0.7),
    ]


def test_the_order_of_choice() -> None:
    def choose(**kwargs: str | None) -> Language:
        values: dict[str, str | None] = {
            "override": None,
            "remembered": None,
            "preference": None,
            "accept_language": None,
        }
        values.update(kwargs)
        return choose_language(**values)  # type: ignore[arg-type]

    assert choose() == Language.EN
    assert choose(accept_language="nl") == Language.NL
    assert choose(preference="nl", accept_language="en") == Language.NL
    assert choose(remembered="en", preference="nl") == Language.EN
    assert choose(override="nl", remembered="en", preference="en") == Language.NL
    assert choose(override="de", accept_language="nl") == Language.NL  # unsupported: ignored


def test_the_catalogues_have_the_same_keys() -> None:
    catalogues = Catalogues.load()
    assert set(catalogues.messages[Language.NL]) == set(catalogues.messages[Language.EN])


def test_every_kind_of_transfer_is_said_in_words() -> None:
    """The transfer history says what each item was (a listing, an event, an eligibility
    answer...) in the customer's language, and how many times a repeated one happened."""
    catalogues = Catalogues.load()
    for language in Language:
        say = catalogues.translator(language)
        for kind in (*DISCLOSURE_KINDS, ELIGIBILITY):
            assert say(f"disclosure.{kind}"), (language, kind)
        assert "7" in say.plural("app.occurrences", 7)
    english = catalogues.translator(Language.EN)
    assert english("disclosure.listing") == "listed your vehicle"
    assert english("disclosure.eligibility") == "answered an eligibility check"


def write_catalogue(directory: Path, language: str, name: str, messages: dict[str, str]) -> None:
    (directory / language).mkdir(exist_ok=True)
    (directory / language / name).write_text(json.dumps(messages))


def test_every_feature_brings_its_own_message_file(tmp_path: Path) -> None:
    for language in ("en", "nl"):
        write_catalogue(tmp_path, language, "a.json", {"a.one": f"{language} a"})
        write_catalogue(tmp_path, language, "b.json", {"b.one": f"{language} b"})
    catalogues = Catalogues.load(tmp_path)
    assert catalogues.translator(Language.NL)("b.one") == "nl b"


def test_catalogues_with_different_keys_are_refused(tmp_path: Path) -> None:
    english = json.loads((MESSAGES_DIR / "en" / "login.json").read_text())
    write_catalogue(tmp_path, "en", "login.json", english)
    write_catalogue(tmp_path, "nl", "login.json", {**english, "extra.key": "x"})
    with pytest.raises(ValueError, match=r"extra\.key"):
        Catalogues.load(tmp_path)


def test_a_key_in_two_files_is_refused(tmp_path: Path) -> None:
    for language in ("en", "nl"):
        write_catalogue(tmp_path, language, "a.json", {"same.key": "x"})
        write_catalogue(tmp_path, language, "b.json", {"same.key": "y"})
    with pytest.raises(ValueError, match=r"repeats keys"):
        Catalogues.load(tmp_path)


def test_every_message_a_template_uses_exists() -> None:
    catalogue = set(Catalogues.load().messages[Language.EN])
    missing: dict[str, list[str]] = {}
    for template in sorted(TEMPLATES_DIR.glob("*.html")):
        used = set(re.findall(r"""\bt\(\s*["']([a-z_.]*[a-z_])["']""", template.read_text()))
        if used - catalogue:
            missing[template.name] = sorted(used - catalogue)
    assert missing == {}, f"messages missing from broker/web/messages/*/: {missing}"


def test_translations_fill_in_and_pluralise() -> None:
    catalogues = Catalogues.load()
    dutch = catalogues.translator(Language.NL)
    english = catalogues.translator(Language.EN)
    assert dutch("nav.logged_in_as", login="anna") == "Ingelogd als anna"
    assert dutch.plural("time.minutes", 1) == "1 minuut"
    assert dutch.plural("time.minutes", 5) == "5 minuten"
    assert english.plural("time.seconds", 1) == "1 second"
    with pytest.raises(KeyError):
        english("no.such.message")
