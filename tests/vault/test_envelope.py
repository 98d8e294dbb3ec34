"""The pure envelope: AES-256-GCM sealing and key wrapping, and every way a blob is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import BrokerError
from broker.vault.envelope import (
    FORMAT_AES256_GCM,
    KEY_BYTES,
    OVERHEAD,
    DecryptionFailed,
    associated_data,
    derive_kek,
    generate_data_key,
    kek_id,
    open_sealed,
    seal,
    unwrap,
    wrap,
)

MASTER = bytes(range(32))
KEK = derive_kek(MASTER)
DEK = bytes(range(200, 232))
AAD = associated_data("telemetry_record", "r-1")
KEYS = st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES)


def flip(blob: bytes, bit: int) -> bytes:
    data = bytearray(blob)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def test_seal_and_open_round_trip() -> None:
    blob = seal(DEK, b"52.370216,4.895167", AAD)
    assert blob[0] == FORMAT_AES256_GCM
    assert len(blob) == len(b"52.370216,4.895167") + OVERHEAD
    assert b"52.370216" not in blob
    assert open_sealed(DEK, blob, AAD) == b"52.370216,4.895167"


def test_every_seal_uses_a_fresh_nonce() -> None:
    assert seal(DEK, b"same", AAD) != seal(DEK, b"same", AAD)


def test_wrong_associated_data_is_refused() -> None:
    blob = seal(DEK, b"secret", AAD)
    with pytest.raises(DecryptionFailed, match="failed authentication"):
        open_sealed(DEK, blob, associated_data("telemetry_record", "r-2"))


def test_wrong_data_key_is_refused() -> None:
    blob = seal(DEK, b"secret", AAD)
    with pytest.raises(DecryptionFailed):
        open_sealed(generate_data_key(), blob, AAD)


def test_tampered_blob_is_refused_without_echoing_data() -> None:
    blob = seal(DEK, b"anna@example.test", AAD)
    with pytest.raises(DecryptionFailed) as caught:
        open_sealed(DEK, flip(blob, 8 * 20), AAD)
    assert "anna" not in str(caught.value)
    assert isinstance(caught.value, BrokerError)
    assert caught.value.problem()["type"].endswith(":decryption_failed")


def test_truncated_blob_and_unknown_version_are_refused() -> None:
    blob = seal(DEK, b"secret", AAD)
    with pytest.raises(DecryptionFailed, match="truncated"):
        open_sealed(DEK, blob[: OVERHEAD - 1], AAD)
    with pytest.raises(DecryptionFailed, match="format version 2"):
        open_sealed(DEK, bytes([2]) + blob[1:], AAD)


def test_wrap_and_unwrap_round_trip() -> None:
    wrapped = wrap(KEK, DEK, "customer:c-anna")
    assert DEK not in wrapped
    assert unwrap(KEK, wrapped, "customer:c-anna") == DEK


def test_a_wrapped_key_moved_to_another_owner_does_not_unwrap() -> None:
    wrapped = wrap(KEK, DEK, "customer:c-anna")
    with pytest.raises(DecryptionFailed, match="wrapped data key"):
        unwrap(KEK, wrapped, "customer:c-bram")


def test_a_wrapped_key_does_not_unwrap_under_another_master_key() -> None:
    wrapped = wrap(KEK, DEK, "customer:c-anna")
    with pytest.raises(DecryptionFailed):
        unwrap(derive_kek(bytes(range(1, 33))), wrapped, "customer:c-anna")


def test_a_wrapped_key_is_not_sealed_data_of_the_same_key() -> None:
    wrapped = wrap(KEK, DEK, "customer:c-anna")
    with pytest.raises(DecryptionFailed):
        open_sealed(KEK, wrapped, b"customer:c-anna")


def test_generate_data_key_is_random_and_32_bytes() -> None:
    keys = {generate_data_key() for _ in range(16)}
    assert len(keys) == 16
    assert all(len(key) == KEY_BYTES for key in keys)


def test_kek_is_derived_not_the_master_key() -> None:
    assert derive_kek(MASTER) == KEK
    assert KEK != MASTER
    assert derive_kek(MASTER + b"\x00") != KEK
    with pytest.raises(ValueError, match="at least 32 bytes"):
        derive_kek(bytes(31))


def test_kek_id_is_a_short_stable_fingerprint() -> None:
    identifier = kek_id(KEK)
    assert len(identifier) == 16
    assert int(identifier, 16) >= 0
    assert kek_id(KEK) == identifier
    assert kek_id(derive_kek(bytes(range(1, 33)))) != identifier
    assert identifier not in KEK.hex()


def test_associated_data_parts_do_not_run_together() -> None:
    assert associated_data("ab", "c") != associated_data("a", "bc")
    assert associated_data("a") != associated_data("a", "")


def test_keys_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal(bytes(16), b"x", b"")
    with pytest.raises(ValueError, match="32 bytes"):
        wrap(KEK, bytes(16), "customer:c-anna")
    with pytest.raises(ValueError, match="owner"):
        wrap(KEK, DEK, "")


@given(key=KEYS, plaintext=st.binary(max_size=2048), aad=st.binary(max_size=256))
def test_seal_open_round_trips_any_bytes_and_aad(key: bytes, plaintext: bytes, aad: bytes) -> None:
    assert open_sealed(key, seal(key, plaintext, aad), aad) == plaintext


@given(
    key=KEYS,
    plaintext=st.binary(max_size=256),
    aad=st.binary(max_size=64),
    data=st.data(),
)
def test_flipping_any_single_bit_of_a_blob_fails(
    key: bytes, plaintext: bytes, aad: bytes, data: st.DataObject
) -> None:
    blob = seal(key, plaintext, aad)
    bit = data.draw(st.integers(min_value=0, max_value=8 * len(blob) - 1), label="bit")
    with pytest.raises(DecryptionFailed):
        open_sealed(key, flip(blob, bit), aad)


@given(key=KEYS, dek=KEYS, owner=st.text(min_size=1, max_size=96), data=st.data())
def test_flipping_any_single_bit_of_a_wrapped_key_fails(
    key: bytes, dek: bytes, owner: str, data: st.DataObject
) -> None:
    wrapped = wrap(key, dek, owner)
    assert unwrap(key, wrapped, owner) == dek
    bit = data.draw(st.integers(min_value=0, max_value=8 * len(wrapped) - 1), label="bit")
    with pytest.raises(DecryptionFailed):
        unwrap(key, flip(wrapped, bit), owner)
