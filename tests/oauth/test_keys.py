"""The broker's signing keys: a key directory, rotation by kid, the JWK Set, thumbprints."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import ConfigurationError
from broker.oauth.jose import InvalidToken, issue_access_token, verify_access_token
from broker.oauth.keys import (
    CURRENT_MARKER,
    SigningKey,
    SigningKeys,
    jwk_thumbprint,
    public_jwk,
    rotate,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ISSUER = "http://localhost:8080"
AUDIENCE = f"{ISSUER}/api"

#: RFC 7638 section 3.1: the example RSA key and its thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

#: RFC 8037 appendix A.2 and A.3: an Ed25519 public key and its thumbprint.
RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def _token(keys: SigningKeys) -> str:
    token, _ = issue_access_token(
        keys,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="customer-1",
        client_id="insurer",
        scope="telemetry:read",
        lifetime=timedelta(minutes=10),
        now=T0,
    )
    return token


def _verify(token: str, keys: SigningKeys) -> dict[str, object]:
    return verify_access_token(token, keys, issuer=ISSUER, audience=AUDIENCE, now=T0)


def _write_pem(path: Path, key: object) -> None:
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# --- RFC 7638 thumbprints -----------------------------------------------------------------


def test_the_rfc_7638_example_thumbprint() -> None:
    assert jwk_thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


def test_the_rfc_8037_ed25519_thumbprint() -> None:
    assert jwk_thumbprint(RFC8037_JWK) == RFC8037_THUMBPRINT


def test_an_ec_thumbprint_hashes_crv_kty_x_y_in_order() -> None:
    jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()))
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    digest = hashlib.sha256(canonical.encode()).digest()
    assert jwk_thumbprint(jwk) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@given(
    extra=st.dictionaries(
        st.sampled_from(["kid", "alg", "use", "key_ops", "x5t", "whatever"]), st.text(max_size=8)
    ),
    reverse=st.booleans(),
)
def test_optional_members_and_member_order_never_change_a_thumbprint(
    extra: dict[str, str], reverse: bool
) -> None:
    items = list({**RFC7638_JWK, **extra}.items())
    jwk = dict(reversed(items) if reverse else items)
    jwk.update({name: RFC7638_JWK[name] for name in ("kty", "n", "e")})
    assert jwk_thumbprint(jwk) == RFC7638_THUMBPRINT


def test_a_private_jwk_has_the_thumbprint_of_its_public_key() -> None:
    assert jwk_thumbprint({**RFC8037_JWK, "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}) == (
        RFC8037_THUMBPRINT
    )


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "RSA", "n": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": "AA"},
        {"kty": "OKP", "x": "AA"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": 3},
        {"kty": "XYZ", "k": "AA"},
        {"n": "AA", "e": "AQAB"},
    ],
)
def test_a_thumbprint_needs_every_required_member(jwk: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="JWK"):
        jwk_thumbprint(jwk)


# --- the key directory ------------------------------------------------------------------------


def test_an_empty_directory_gets_a_first_private_key(tmp_path: Path) -> None:
    directory = tmp_path / "oauth-keys"
    keys = SigningKeys.load(directory)
    pem = directory / f"{keys.current_kid}.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    loaded = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert isinstance(loaded.curve, ec.SECP256R1)
    assert b"BEGIN PRIVATE KEY" in pem.read_bytes()  # PKCS #8
    assert keys.current_kid == jwk_thumbprint(public_jwk(loaded))
    assert SigningKeys.load(directory).current_kid == keys.current_kid  # loaded, not re-created


def test_without_create_a_missing_or_empty_directory_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        SigningKeys.load(tmp_path / "absent", create=False)
    with pytest.raises(ConfigurationError, match="holds no key"):
        SigningKeys.load(tmp_path, create=False)
    assert not list(tmp_path.iterdir())


def test_the_jwks_publishes_public_keys_only(tmp_path: Path) -> None:
    keys = SigningKeys.load(tmp_path)
    (jwk,) = keys.jwks()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert jwk["kid"] == keys.current_kid
    keys.jwks()["keys"].clear()  # a copy: the caller cannot change what is published
    assert len(keys.jwks()["keys"]) == 1


def test_rotation_keeps_the_previous_key_published_until_it_is_removed(tmp_path: Path) -> None:
    before = SigningKeys.load(tmp_path)
    old_token = _token(before)

    new_kid = rotate(tmp_path)
    after = SigningKeys.load(tmp_path)
    assert after.current_kid == new_kid != before.current_kid
    assert (tmp_path / CURRENT_MARKER).read_text().strip() == new_kid
    assert [jwk["kid"] for jwk in after.jwks()["keys"]] == [new_kid, before.current_kid]
    assert after.kids == (new_kid, before.current_kid)
    assert _verify(old_token, after)["sub"] == "customer-1"  # signed by the previous key
    new_token = _token(after)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert _verify(new_token, after)["jti"]

    (tmp_path / f"{before.current_kid}.pem").unlink()
    pruned = SigningKeys.load(tmp_path)
    assert pruned.kids == (new_kid,)
    with pytest.raises(InvalidToken, match="no signing key"):
        _verify(old_token, pruned)
    assert _verify(new_token, pruned)["jti"]


def test_rotate_writes_a_private_key_file(tmp_path: Path) -> None:
    kid = rotate(tmp_path / "new")
    assert stat.S_IMODE((tmp_path / "new" / f"{kid}.pem").stat().st_mode) == 0o600
    assert {path.name for path in (tmp_path / "new").iterdir()} == {CURRENT_MARKER, f"{kid}.pem"}


def test_without_a_marker_the_newest_key_signs(tmp_path: Path) -> None:
    older, newer = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    _write_pem(tmp_path / "2026-01.pem", older)
    _write_pem(tmp_path / "2025-12.pem", newer)
    os.utime(tmp_path / "2026-01.pem", (1_700_000_000, 1_700_000_000))
    os.utime(tmp_path / "2025-12.pem", (1_800_000_000, 1_800_000_000))
    keys = SigningKeys.load(tmp_path)
    assert keys.current_kid == "2025-12"
    assert set(keys.kids) == {"2025-12", "2026-01"}


def test_the_marker_wins_over_file_times(tmp_path: Path) -> None:
    _write_pem(tmp_path / "a.pem", ec.generate_private_key(ec.SECP256R1()))
    _write_pem(tmp_path / "b.pem", ec.generate_private_key(ec.SECP256R1()))
    os.utime(tmp_path / "a.pem", (1_700_000_000, 1_700_000_000))
    (tmp_path / CURRENT_MARKER).write_text("a\n")
    assert SigningKeys.load(tmp_path).current_kid == "a"


def test_a_marker_naming_no_key_is_refused(tmp_path: Path) -> None:
    _write_pem(tmp_path / "a.pem", ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / CURRENT_MARKER).write_text("gone\n")
    with pytest.raises(ConfigurationError, match="names no key"):
        SigningKeys.load(tmp_path)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("p384.pem", ec.generate_private_key(ec.SECP384R1())),
        ("ed.pem", ed25519.Ed25519PrivateKey.generate()),
        ("has space.pem", ec.generate_private_key(ec.SECP256R1())),
        ("garbage.pem", None),
    ],
)
def test_a_key_that_is_not_an_es256_pem_is_a_configuration_error(
    tmp_path: Path, name: str, key: object
) -> None:
    if key is None:
        (tmp_path / name).write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    else:
        _write_pem(tmp_path / name, key)
    with pytest.raises(ConfigurationError):
        SigningKeys.load(tmp_path)


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("keys live here\n")
    keys = SigningKeys.load(tmp_path)
    assert len(keys) == 1


def test_an_in_memory_key_set_and_its_checks() -> None:
    keys = SigningKeys.generate()
    assert keys.public_key(keys.current_kid) is not None
    assert keys.public_key("unknown") is None
    assert "private" not in repr(keys.current).lower()
    key = keys.current
    with pytest.raises(ConfigurationError, match="share the kid"):
        SigningKeys([key, key], current_kid=key.kid)
    with pytest.raises(ConfigurationError, match="missing"):
        SigningKeys([key], current_kid="other")
    with pytest.raises(ConfigurationError, match="P-256"):
        SigningKey(kid="k", private_key=ec.generate_private_key(ec.SECP384R1()))
