"""Master key loading, HKDF derivation per (recipient, contract), and pseudonyms."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.contracts import Contract
from broker.errors import ConfigurationError
from broker.protection import ProtectionContext
from broker.protection.keys import (
    PSEUDONYM_LENGTH,
    Pseudonymiser,
    derive_pseudonym_key,
    generate_master_key,
    load_master_key,
    parse_master_key,
)

KEY = bytes(range(32))
PSEUDONYM = re.compile(r"psn_[a-z2-7]{26}")


# --- master key ------------------------------------------------------------------------------


def test_generated_key_loads_back_as_32_random_bytes() -> None:
    text = generate_master_key()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", text)
    assert len(load_master_key(text, None)) == 32
    assert generate_master_key() != text


@pytest.mark.parametrize(
    "text",
    [
        KEY.hex(),
        KEY.hex().upper(),
        base64.urlsafe_b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
        f"  {KEY.hex()}\n",
    ],
)
def test_master_key_in_hex_or_base64url(text: str) -> None:
    assert load_master_key(text, None) == KEY


def test_longer_keys_are_accepted() -> None:
    long_key = bytes(range(64))
    assert parse_master_key(long_key.hex()) == long_key
    assert parse_master_key(base64.urlsafe_b64encode(long_key).decode()) == long_key


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (bytes(31).hex(), "31 bytes"),
        (base64.urlsafe_b64encode(bytes(range(24))).decode(), "24 bytes"),
        ("not a key!", "neither hex nor base64url"),
        (base64.standard_b64encode(b"\xfb" * 32).decode(), "neither hex nor base64url"),
        ("A" * 45, "malformed base64url"),
        ("A" * 42 + "B", "malformed base64url"),
        ("   ", "no master key"),
    ],
)
def test_short_or_malformed_keys_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason) as raised:
        load_master_key(text, None)
    assert text.strip() == "" or text not in str(raised.value)


def test_environment_wins_over_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(bytes(range(1, 33)).hex(), encoding="utf-8")
    assert load_master_key(KEY.hex(), key_file) == KEY
    assert load_master_key(None, key_file) == bytes(range(1, 33))
    assert load_master_key("", key_file) == bytes(range(1, 33))


def test_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot read the master key file missing\.key"):
        load_master_key(None, tmp_path / "missing.key")
    empty = tmp_path / "empty.key"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="empty"):
        load_master_key(None, empty)
    short = tmp_path / "short.key"
    short.write_text("abcd", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="2 bytes"):
        load_master_key(None, short)


def test_no_key_at_all_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no master key"):
        load_master_key(None, None)


# --- derivation ------------------------------------------------------------------------------


def test_derivation_is_deterministic_and_32_bytes() -> None:
    key = derive_pseudonym_key(KEY, "rcp-a", "contract-1")
    assert len(key) == 32
    assert key == derive_pseudonym_key(KEY, "rcp-a", "contract-1")


def test_derived_keys_differ_per_recipient_per_contract_and_per_master_key() -> None:
    keys = {
        derive_pseudonym_key(KEY, "rcp-a", "contract-1"),
        derive_pseudonym_key(KEY, "rcp-b", "contract-1"),
        derive_pseudonym_key(KEY, "rcp-a", "contract-2"),
        derive_pseudonym_key(bytes(range(1, 33)), "rcp-a", "contract-1"),
        # No ambiguity in how the two ids are joined.
        derive_pseudonym_key(KEY, "rcp-acontract", "-1"),
        derive_pseudonym_key(KEY, "rcp-a", "contract-1\x00"),
    }
    assert len(keys) == 6


def test_derivation_refuses_a_short_master_key_or_empty_ids() -> None:
    with pytest.raises(ConfigurationError):
        derive_pseudonym_key(bytes(16), "rcp-a", "contract-1")
    with pytest.raises(ValueError, match="recipient id and a contract id"):
        derive_pseudonym_key(KEY, "", "contract-1")


def test_contract_version_plays_no_part_in_pseudonyms(
    make_contract: Callable[..., Contract], make_context: Callable[..., ProtectionContext]
) -> None:
    v1 = make_context(make_contract(version=1))
    v2 = make_context(make_contract(version=7))
    assert v1.pseudonymiser.vehicle("WBA12345678901234") == v2.pseudonymiser.vehicle(
        "WBA12345678901234"
    )


# --- pseudonyms ------------------------------------------------------------------------------


@given(kind=st.sampled_from(["vin", "identifier", "x"]), value=st.text(max_size=40))
def test_pseudonyms_are_deterministic_fixed_length_base32(kind: str, value: str) -> None:
    pseudonymiser = Pseudonymiser(derive_pseudonym_key(KEY, "rcp-a", "contract-1"))
    first = pseudonymiser.pseudonym(kind, value)
    assert PSEUDONYM.fullmatch(first)
    assert len(first) == PSEUDONYM_LENGTH == 30
    assert first == pseudonymiser.pseudonym(kind, value)


def test_pseudonyms_differ_per_kind_value_and_key() -> None:
    a = Pseudonymiser.for_contract(KEY, "rcp-a", "contract-1")
    b = Pseudonymiser.for_contract(KEY, "rcp-b", "contract-1")
    values = {
        a.pseudonym("vin", "WBA12345678901234"),
        a.pseudonym("identifier", "WBA12345678901234"),
        a.pseudonym("vin", "WBA12345678901235"),
        b.pseudonym("vin", "WBA12345678901234"),
    }
    assert len(values) == 4


def test_vehicle_and_identifier_pseudonyms_are_normalised() -> None:
    p = Pseudonymiser.for_contract(KEY, "rcp-a", "contract-1")
    assert p.vehicle(" wba12345678901234 ") == p.vehicle("WBA12345678901234")
    assert p.identifier("Jan  de VRIES") == p.identifier("jan de vries")
    assert p.identifier("jan@example.nl") != p.identifier("piet@example.nl")


def test_pseudonymiser_never_shows_its_key() -> None:
    p = Pseudonymiser.for_contract(KEY, "rcp-a", "contract-1")
    assert "rcp-a" in repr(p)
    assert derive_pseudonym_key(KEY, "rcp-a", "contract-1").hex() not in repr(p)
    with pytest.raises(ValueError, match="32 bytes"):
        Pseudonymiser(bytes(8))
