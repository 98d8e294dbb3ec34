"""Free-text scrubbing of known identifiers, e-mail addresses, phones, VINs and coordinates."""

from __future__ import annotations

import pytest

from broker.protection.keys import Pseudonymiser
from broker.protection.scrub import Scrubber

PSEUDONYMISER = Pseudonymiser.for_contract(bytes(range(32)), "rcp-a", "contract-1")
VIN = "WBA12345678901234"
OTHER_VIN = "VF1AB000012345678"


def remover(*identifiers: str) -> Scrubber:
    return Scrubber(
        vins=[VIN], identifiers=identifiers, vehicle_ref=lambda _: None, identifier_ref=None
    )


def pseudonymiser(*identifiers: str) -> Scrubber:
    return Scrubber(
        vins=[VIN],
        identifiers=identifiers,
        vehicle_ref=PSEUDONYMISER.vehicle,
        identifier_ref=PSEUDONYMISER.identifier,
    )


def test_known_identifiers_are_removed_whatever_their_case_and_spacing() -> None:
    scrub = remover("Jan de Vries", "12-ABC-3")
    text = "JAN DE  VRIES parked 12-abc-3 near jan de vries's house"
    assert scrub.text(text) == "[redacted] parked [redacted] near [redacted]'s house"


def test_known_identifiers_become_their_pseudonym() -> None:
    scrub = pseudonymiser("Jan de Vries")
    assert (
        scrub.text("driver: Jan de Vries") == f"driver: {PSEUDONYMISER.identifier('jan de vries')}"
    )


def test_longest_identifier_wins() -> None:
    scrub = remover("Jan", "Jan de Vries")
    assert scrub.text("Jan de Vries and Jan") == "[redacted] and [redacted]"


def test_short_identifiers_are_whole_words_only_and_single_characters_ignored() -> None:
    scrub = remover("Bo", "X")
    assert scrub.text("Bo drove the Boat, X marks") == "[redacted] drove the Boat, X marks"


def test_casefolded_forms_match_too() -> None:
    assert remover("Straße 1").text("at strasse 1") == "at [redacted]"


def test_vins_become_the_vehicle_reference_or_a_placeholder() -> None:
    text = f"VIN {VIN}, other vin:{OTHER_VIN.lower()}."
    assert remover().text(text) == "VIN [vin], other vin:[vin]."
    pseudonymised = pseudonymiser().text(text)
    assert pseudonymised == (
        f"VIN {PSEUDONYMISER.vehicle(VIN)}, other vin:{PSEUDONYMISER.vehicle(OTHER_VIN)}."
    )


def test_a_known_vin_is_found_even_inside_a_longer_token() -> None:
    assert remover().text(f"ref-{VIN}x7") == "ref-[vin]x7"


def test_vin_shaped_means_17_characters_without_i_o_q_as_a_word() -> None:
    scrub = remover()
    assert scrub.text("WBA1234567890123I") == "WBA1234567890123I"  # I is not a VIN character
    assert scrub.text("VF1AB0000123456789") == "VF1AB0000123456789"  # 18 characters
    assert scrub.text("x_VF1AB000012345678_y") == "x_[vin]_y"


@pytest.mark.parametrize(
    "email",
    ["jan.devries@example.nl", "J+tag@sub.example.co.uk", "o'brien!#$%&*{|}~@example.com"],
)
def test_email_addresses_are_removed(email: str) -> None:
    assert remover().text(f"mail <{email}> now") == "mail <[email]> now"


def test_email_addresses_are_pseudonymised() -> None:
    out = pseudonymiser().text("Mail: Jan@Example.NL")
    assert out == f"Mail: {PSEUDONYMISER.identifier('jan@example.nl')}"


def test_phone_numbers_are_removed() -> None:
    assert remover().text("call +31 6 1234 5678 or +31612345678") == "call [phone] or [phone]"
    assert remover().text("version 3.2 costs 12") == "version 3.2 costs 12"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("at 52.370216, 4.895167", "at [position], [position]"),
        ("at 52,37021 en 4,89517", "at [position] en [position]"),
        ("lat=-33.86882", "lat=[position]"),
        ("speed 81.5 km/h, 3.141", "speed 81.5 km/h, 3.141"),
    ],
)
def test_numbers_with_four_or_more_decimals_are_positions(text: str, expected: str) -> None:
    assert remover().text(text) == expected


def test_pseudonyms_survive_a_second_scrub() -> None:
    scrub = pseudonymiser("Jan de Vries")
    once = scrub.text(f"Jan de Vries, {VIN}, jan@example.nl")
    assert scrub.text(once) == once


def test_values_are_scrubbed_in_lists_and_left_alone_otherwise() -> None:
    scrub = remover("Jan")
    assert scrub.value(["Jan", 52.370216, None]) == ["[redacted]", 52.370216, None]
    assert scrub.value(52.370216) == 52.370216
