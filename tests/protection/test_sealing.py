"""Sealed cursors (AES-256-GCM, associated data naming the holder and query)."""

from __future__ import annotations

import base64

import pytest

from broker.protection.sealing import Sealer, UnsealError, associated_data

MASTER_KEY = bytes(range(32))
CONTENT = {"a": "2026-03-10T12:01:00.123456Z", "i": "ds-10001-0"}


def aad(recipient: str = "rcp-insurer", scope: str = "insurer-ubi", query: str = "q1") -> bytes:
    return associated_data("cursor", (recipient, scope, query))


def test_a_token_opens_in_every_process_with_the_same_master_key() -> None:
    token = Sealer.from_master_key(MASTER_KEY).seal(CONTENT, aad())
    assert Sealer.from_master_key(MASTER_KEY).open(token, aad()) == CONTENT


def test_a_token_reveals_nothing_of_its_content() -> None:
    sealer = Sealer.from_master_key(MASTER_KEY)
    token = sealer.seal(CONTENT, aad())
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for secret in ("ds-10001", "2026-03-10", "12:01"):
        assert secret.encode() not in raw and secret not in token
    assert sealer.seal(CONTENT, aad()) != token  # a fresh nonce: equal contents do not match


@pytest.mark.parametrize(
    "other",
    [aad(recipient="rcp-devpartner"), aad(scope="devpartner-pull"), aad(query="q2")],
    ids=["another recipient", "another contract", "another query"],
)
def test_a_token_is_refused_for_anyone_or_anything_else(other: bytes) -> None:
    sealer = Sealer.from_master_key(MASTER_KEY)
    with pytest.raises(UnsealError):
        sealer.open(sealer.seal(CONTENT, aad()), other)


def test_a_tampered_forged_or_foreign_token_is_refused() -> None:
    sealer = Sealer.from_master_key(MASTER_KEY)
    token = sealer.seal(CONTENT, aad())
    flipped = token[:30] + ("A" if token[30] != "A" else "B") + token[30 + 1 :]
    unsealed = base64.urlsafe_b64encode(b'{"a":"x","i":"y"}').decode().rstrip("=")
    foreign = Sealer.from_master_key(bytes(32)).seal(CONTENT, aad())
    for bad in (flipped, token[:-2], unsealed, foreign, "", "é" * 10, "A" * 5000):
        with pytest.raises(UnsealError):
            sealer.open(bad, aad())


def test_associated_data_is_unambiguous() -> None:
    assert associated_data("cursor", ("ab", "c")) != associated_data("cursor", ("a", "bc"))
