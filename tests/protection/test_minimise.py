"""Minimisation: only the contract's fields, only flat values."""

from __future__ import annotations

from broker.protection.minimise import minimise


def test_unknown_keys_are_dropped() -> None:
    data = {"latitude": 52.1, "speed_kmh": 80, "vin": "WBA12345678901234", "driver": "Jan"}
    assert minimise(data, {"latitude", "speed_kmh"}) == {"latitude": 52.1, "speed_kmh": 80}


def test_nested_objects_are_dropped_even_under_a_known_key() -> None:
    data = {
        "model": {"name": "MINI", "owner": "Jan de Vries"},
        "colour": "green",
        "extra": {"nested": {"deeper": "WBA12345678901234"}},
    }
    assert minimise(data, {"model", "colour"}) == {"colour": "green"}


def test_lists_keep_only_flat_items() -> None:
    data = {"warning_codes": ["P0420", {"vin": "WBA12345678901234"}, ["x"], 3, None, True]}
    assert minimise(data, {"warning_codes"}) == {"warning_codes": ["P0420", 3, None, True]}


def test_non_json_values_are_dropped() -> None:
    data = {"a": float("nan"), "b": float("inf"), "c": object(), "d": 1.5, "e": None, "f": False}
    assert minimise(data, "abcdef") == {"d": 1.5, "e": None, "f": False}


def test_no_fields_means_nothing() -> None:
    assert minimise({"latitude": 52.1}, ()) == {}
