"""JWTs: RFC 9068 access tokens, private_key_jwt client assertions, RFC 9449 DPoP proofs.

Every refusal is shown with a token crafted to fail exactly one check; the
crafted tokens are otherwise valid (signed by the right key where that matters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.oauth.jose import (
    DpopProof,
    InvalidClient,
    InvalidDpopProof,
    InvalidToken,
    access_token_hash,
    issue_access_token,
    public_jwk_of,
    sign_client_assertion,
    sign_dpop_proof,
    unverified_issuer,
    verify_access_token,
    verify_client_assertion,
    verify_dpop_proof,
)
from broker.oauth.keys import SigningKeys, jwk_thumbprint

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ISSUER = "http://localhost:8080"
TOKEN_ENDPOINT = f"{ISSUER}/oauth/token"
AUDIENCE = f"{ISSUER}/api"
LIFETIME = timedelta(minutes=10)
CLIENT = "insurer-backend"
RESOURCE = f"{ISSUER}/api/vehicles/v-1/telemetry"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: object) -> str:
    return b64(json.dumps(value).encode())


def craft(header: dict[str, Any], claims: dict[str, Any], key: object, alg: str = "ES256") -> str:
    """A JWT with exactly this header (no default ``typ``), signed by ``key``."""
    signing_input = f"{segment(header)}.{segment(claims)}".encode()
    algorithm = jwt.get_algorithm_by_name(alg)
    return f"{signing_input.decode()}.{b64(algorithm.sign(signing_input, key))}"


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}".encode()
    return f"{signing_input.decode()}.{b64(hmac.digest(secret, signing_input, 'sha256'))}"


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{segment(header)}.{segment(claims)}."


def public_pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def issue(keys: SigningKeys, **overrides: Any) -> tuple[str, dict[str, Any]]:
    arguments: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "subject": "customer-7",
        "client_id": CLIENT,
        "scope": "telemetry:read position:read",
        "lifetime": LIFETIME,
        "now": T0,
        **overrides,
    }
    return issue_access_token(keys, **arguments)


def verify(token: str, keys: SigningKeys, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "now": T0, **overrides}
    return verify_access_token(token, keys, **arguments)


def at_header(keys: SigningKeys, **changes: Any) -> dict[str, Any]:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": keys.current_kid, **changes}
    return {name: value for name, value in header.items() if value is not None}


# --- access tokens: the round trip ------------------------------------------------------------


def test_an_access_token_round_trip(keys: SigningKeys) -> None:
    token, claims = issue(
        keys,
        extra={"grants": ["g-1", "g-2"], "token_kind": "partner"},
        cnf_jkt="0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
    )
    assert jwt.get_unverified_header(token) == {
        "alg": "ES256",
        "typ": "at+jwt",
        "kid": keys.current_kid,
    }
    verified = verify(token, keys)
    assert verified == claims
    issued = int(T0.timestamp())
    assert verified["iat"] == verified["nbf"] == issued
    assert verified["exp"] == issued + 600
    assert (verified["iss"], verified["aud"], verified["sub"]) == (ISSUER, AUDIENCE, "customer-7")
    assert verified["client_id"] == CLIENT
    assert verified["scope"] == "telemetry:read position:read"
    assert verified["grants"] == ["g-1", "g-2"]
    assert verified["token_kind"] == "partner"
    assert verified["cnf"] == {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
    assert len(verified["jti"]) >= 20


def test_jtis_are_fresh_unless_given(keys: SigningKeys) -> None:
    assert issue(keys)[1]["jti"] != issue(keys)[1]["jti"]
    assert issue(keys, jti="chosen")[1]["jti"] == "chosen"


def test_scopes_may_be_a_list_and_are_deduplicated(keys: SigningKeys) -> None:
    assert issue(keys, scope=["a", "b", "a"])[1]["scope"] == "a b"
    assert issue(keys, scope="")[1]["scope"] == ""
    with pytest.raises(ValueError, match="scope"):
        issue(keys, scope=['bad"scope'])


def test_extra_claims_never_replace_registered_ones(keys: SigningKeys) -> None:
    for name in ("sub", "aud", "exp", "scope", "cnf", "client_id"):
        with pytest.raises(ValueError, match="may not replace"):
            issue(keys, extra={name: "x"})


def test_issuing_needs_an_aware_now_and_a_positive_lifetime(keys: SigningKeys) -> None:
    with pytest.raises(ValueError, match="naive"):
        issue(keys, now=datetime(2026, 3, 2, 8, 0))  # noqa: DTZ001
    with pytest.raises(ValueError, match="positive"):
        issue(keys, lifetime=timedelta(0))


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_the_typ_compare_is_case_insensitive_and_takes_the_full_media_type(
    keys: SigningKeys, typ: str
) -> None:
    _, claims = issue(keys)
    token = craft(at_header(keys, typ=typ), claims, keys.current.private_key)
    assert verify(token, keys)["jti"] == claims["jti"]


def test_the_broker_clock_decides_not_the_wall_clock(keys: SigningKeys) -> None:
    long_ago = datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)
    token, _ = issue(keys, now=long_ago)
    assert verify(token, keys, now=long_ago)["sub"] == "customer-7"  # the wall clock says expired
    with pytest.raises(InvalidToken, match="expired"):
        verify(token, keys, now=long_ago + timedelta(hours=1))


def test_the_leeway_is_the_only_tolerance_on_expiry(keys: SigningKeys) -> None:
    token, _ = issue(keys)
    end = T0 + LIFETIME
    assert verify(token, keys, now=end + timedelta(seconds=29))
    with pytest.raises(InvalidToken, match="expired"):
        verify(token, keys, now=end + timedelta(seconds=30))
    with pytest.raises(InvalidToken, match="expired"):
        verify(token, keys, now=end, leeway=timedelta(0))


# --- access tokens: refusals ------------------------------------------------------------------


def _refused(token: str, keys: SigningKeys, match: str, **overrides: Any) -> InvalidToken:
    with pytest.raises(InvalidToken, match=match) as caught:
        verify(token, keys, **overrides)
    error = caught.value
    assert (error.code, error.status) == ("invalid_token", 401)
    assert token not in error.detail and "customer-7" not in error.detail
    return error


def test_alg_none_is_refused(keys: SigningKeys) -> None:
    _, claims = issue(keys)
    _refused(unsigned(at_header(keys, alg="none"), claims), keys, "not signed with ES256")
    _refused(unsigned(at_header(keys, alg="None"), claims), keys, "not signed with ES256")


def test_hs256_signed_with_the_public_key_is_refused(keys: SigningKeys) -> None:
    _, claims = issue(keys)
    header = at_header(keys, alg="HS256")
    jwk_json = json.dumps(keys.jwks()["keys"][0]).encode()
    for secret in (public_pem(keys.current.private_key), jwk_json):
        _refused(hs256(header, claims, secret), keys, "not signed with ES256")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "dpop+jwt", "at+jwt+x", "text/at+jwt", None, 7])
def test_a_typ_other_than_at_jwt_is_refused(keys: SigningKeys, typ: object) -> None:
    _, claims = issue(keys)
    header = at_header(keys, typ=typ)
    _refused(craft(header, claims, keys.current.private_key), keys, "typ must be at\\+jwt")


def test_another_ecdsa_algorithm_is_refused(keys: SigningKeys, ec384_key: Any) -> None:
    _, claims = issue(keys)
    token = craft(at_header(keys, alg="ES384"), claims, ec384_key, alg="ES384")
    _refused(token, keys, "not signed with ES256")


def test_an_expired_token_is_refused(keys: SigningKeys) -> None:
    token, _ = issue(keys)
    _refused(token, keys, "has expired", now=T0 + LIFETIME + timedelta(minutes=1))


def test_a_token_not_yet_valid_is_refused(keys: SigningKeys) -> None:
    token, claims = issue(keys)
    _refused(token, keys, "not valid yet", now=T0 - timedelta(minutes=1))
    later = {**claims, "nbf": claims["iat"] + 300}
    _refused(craft(at_header(keys), later, keys.current.private_key), keys, "not valid yet")
    future = {key: value for key, value in claims.items() if key != "nbf"}
    future["iat"] += 300
    _refused(craft(at_header(keys), future, keys.current.private_key), keys, "in the future")


def test_a_wrong_issuer_or_audience_is_refused(keys: SigningKeys) -> None:
    token, _ = issue(keys)
    _refused(token, keys, "another issuer", issuer="http://localhost:9999")
    _refused(token, keys, "another audience", audience=f"{ISSUER}/other-api")
    other_aud, _ = issue(keys, audience="https://elsewhere.example")
    _refused(other_aud, keys, "another audience")


def test_an_unknown_or_missing_kid_is_refused(keys: SigningKeys) -> None:
    _, claims = issue(keys)
    for header in (at_header(keys, kid="not-ours"), at_header(keys, kid=None)):
        _refused(craft(header, claims, keys.current.private_key), keys, "no signing key")


def test_a_token_signed_by_another_key_under_our_kid_is_refused(
    keys: SigningKeys, other_ec_key: Any
) -> None:
    _, claims = issue(keys)
    _refused(craft(at_header(keys), claims, other_ec_key), keys, "signature does not verify")


def test_a_tampered_payload_is_refused(keys: SigningKeys) -> None:
    token, claims = issue(keys)
    header, _, signature = token.split(".")
    widened = segment({**claims, "scope": "telemetry:read position:read admin"})
    _refused(f"{header}.{widened}.{signature}", keys, "signature does not verify")


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"])
def test_a_token_missing_a_required_claim_is_refused(keys: SigningKeys, claim: str) -> None:
    _, claims = issue(keys)
    del claims[claim]
    token = craft(at_header(keys), claims, keys.current.private_key)
    _refused(token, keys, f"lacks the {claim} claim")


@pytest.mark.parametrize(
    ("claim", "value", "match"),
    [
        ("exp", "tomorrow", "numeric exp"),
        ("exp", True, "numeric exp"),
        ("iat", "now", "malformed|numeric iat"),
        ("nbf", "soon", "nbf"),
        ("client_id", 7, "client_id"),
        ("sub", 7, "malformed"),
        ("jti", "", "lacks the jti|jti"),
        ("scope", ["a"], "scope"),
    ],
)
def test_claims_of_the_wrong_type_are_refused(
    keys: SigningKeys, claim: str, value: object, match: str
) -> None:
    _, claims = issue(keys)
    claims[claim] = value
    _refused(craft(at_header(keys), claims, keys.current.private_key), keys, match)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "a.b.c.d", "e30.e30.", "x" * 20_000, "ey.ey.ey"],
)
def test_garbage_is_refused_as_an_invalid_token(keys: SigningKeys, token: str) -> None:
    with pytest.raises(InvalidToken):
        verify(token, keys)


def test_critical_headers_are_refused(keys: SigningKeys) -> None:
    _, claims = issue(keys)
    unknown = at_header(keys, crit=["exp"], exp=1)  # refused by PyJWT's header checks
    _refused(craft(unknown, claims, keys.current.private_key), keys, "not a well-formed JWT")
    b64_header = at_header(keys, crit=["b64"], b64=True)  # understood by PyJWT, not by us
    _refused(craft(b64_header, claims, keys.current.private_key), keys, "critical header")


_SIGNED_KEYS = SigningKeys.generate()
_SIGNED_TOKEN, _ = issue(_SIGNED_KEYS)


@settings(max_examples=300)
@given(data=st.data())
def test_any_single_character_change_of_payload_or_signature_fails(data: st.DataObject) -> None:
    header, payload, signature = _SIGNED_TOKEN.split(".")
    part = data.draw(st.sampled_from(["payload", "signature"]))
    text = payload if part == "payload" else signature
    index = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    replacement = data.draw(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E).filter(lambda c: c != text[index])
    )
    changed = text[:index] + replacement + text[index + 1 :]
    token = ".".join(
        [header, changed, signature] if part == "payload" else [header, payload, changed]
    )
    with pytest.raises(InvalidToken):
        verify(token, _SIGNED_KEYS)


@given(flip=st.integers(min_value=0, max_value=63), bit=st.integers(min_value=0, max_value=7))
def test_any_bit_flip_in_the_signature_bytes_fails(flip: int, bit: int) -> None:
    header, payload, signature = _SIGNED_TOKEN.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[flip] ^= 1 << bit
    with pytest.raises(InvalidToken, match="signature does not verify"):
        verify(f"{header}.{payload}.{b64(bytes(raw))}", _SIGNED_KEYS)


# --- private_key_jwt client assertions ---------------------------------------------------------


def jwks(*keys: Any, kid: str | None = "k1", **members: Any) -> dict[str, Any]:
    entries = []
    for index, key in enumerate(keys):
        jwk = public_jwk_of(key)
        if kid is not None:
            jwk["kid"] = kid if len(keys) == 1 else f"{kid}-{index}"
        entries.append({**jwk, **members})
    return {"keys": entries}


def check_assertion(assertion: str, client_jwks: dict[str, Any], **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "client_id": CLIENT,
        "client_jwks": client_jwks,
        "token_endpoint": TOKEN_ENDPOINT,
        "issuer": ISSUER,
        "now": T0,
        **overrides,
    }
    return verify_client_assertion(assertion, **arguments)


def assertion_claims(**changes: Any) -> dict[str, Any]:
    issued = int(T0.timestamp())
    claims = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": TOKEN_ENDPOINT,
        "iat": issued,
        "exp": issued + 60,
        "jti": "assertion-1",
        **changes,
    }
    return {name: value for name, value in claims.items() if value is not None}


def _client_refused(assertion: str, client_jwks: dict[str, Any], match: str, **kw: Any) -> None:
    with pytest.raises(InvalidClient, match=match) as caught:
        check_assertion(assertion, client_jwks, **kw)
    assert (caught.value.code, caught.value.status) == ("invalid_client", 401)


@pytest.mark.parametrize(
    ("key_fixture", "alg"),
    [
        ("ec_key", "ES256"),
        ("ec384_key", "ES384"),
        ("rsa_key", "RS256"),
        ("rsa_key", "PS256"),
        ("ed_key", "EdDSA"),
        ("ed_key", "Ed25519"),
    ],
)
def test_a_client_assertion_round_trip(
    request: pytest.FixtureRequest, key_fixture: str, alg: str
) -> None:
    key = request.getfixturevalue(key_fixture)
    assertion = sign_client_assertion(
        key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, kid="k1", alg=alg
    )
    assert jwt.get_unverified_header(assertion)["alg"] == alg
    claims = check_assertion(assertion, jwks(key))
    assert (claims["iss"], claims["sub"], claims["aud"]) == (CLIENT, CLIENT, TOKEN_ENDPOINT)
    assert claims["jti"]  # the caller stores it to refuse a replay


def test_client_keys_may_be_given_as_pem_or_private_jwk(ec_key: Any, rsa_key: Any) -> None:
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assertion = sign_client_assertion(pem, client_id=CLIENT, audience=ISSUER, now=T0, kid="k1")
    assert check_assertion(assertion, jwks(ec_key))["aud"] == ISSUER
    private_jwk = {
        **jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key, as_dict=True),
        "kid": "k1",
    }
    assertion = sign_client_assertion(
        private_jwk, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, alg="PS256"
    )
    assert jwt.get_unverified_header(assertion)["kid"] == "k1"  # taken from the JWK
    assert check_assertion(assertion, jwks(rsa_key))["sub"] == CLIENT


def test_without_a_kid_every_key_of_the_right_type_is_tried(
    ec_key: Any, other_ec_key: Any, rsa_key: Any, ed_key: Any
) -> None:
    assertion = sign_client_assertion(ec_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0)
    assert "kid" not in jwt.get_unverified_header(assertion)
    key_set = jwks(rsa_key, ed_key, other_ec_key, ec_key)
    assert check_assertion(assertion, key_set)["iss"] == CLIENT
    _client_refused(assertion, jwks(other_ec_key, rsa_key), "signature does not verify")


def test_an_audience_list_naming_the_token_endpoint_is_accepted(ec_key: Any) -> None:
    claims = assertion_claims(aud=["https://elsewhere.example", TOKEN_ENDPOINT])
    assertion = craft({"alg": "ES256", "kid": "k1"}, claims, ec_key)
    assert check_assertion(assertion, jwks(ec_key))["jti"] == "assertion-1"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"iss": "someone-else"}, "iss is not the client id"),
        ({"sub": "someone-else"}, "sub is not the client id"),
        ({"iss": None}, "iss is not the client id"),
        ({"aud": "https://elsewhere.example/token"}, "aud is neither"),
        ({"aud": [AUDIENCE]}, "aud is neither"),
        ({"aud": None}, "aud is neither"),
        ({"exp": int(T0.timestamp()) - 60}, "has expired"),
        ({"exp": None}, "lacks a numeric exp"),
        ({"exp": int(T0.timestamp()) + 3600}, "too far in the future"),
        ({"iat": int(T0.timestamp()) + 600}, "issued in the future"),
        ({"iat": int(T0.timestamp()) - 3600}, "too long ago"),
        ({"nbf": int(T0.timestamp()) + 600}, "not valid yet"),
        ({"jti": None}, "lacks a jti"),
        ({"jti": 12}, "lacks a jti"),
        ({"jti": "j" * 300}, "jti is too long"),
    ],
)
def test_a_client_assertion_failing_one_check_is_refused(
    ec_key: Any, changes: dict[str, Any], match: str
) -> None:
    assertion = craft({"alg": "ES256", "kid": "k1"}, assertion_claims(**changes), ec_key)
    _client_refused(assertion, jwks(ec_key), match)


def test_an_assertion_for_another_client_is_refused(ec_key: Any) -> None:
    assertion = sign_client_assertion(ec_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0)
    _client_refused(assertion, jwks(ec_key), "iss is not the client id", client_id="other")


def test_an_assertion_signed_by_a_key_not_in_the_jwks_is_refused(
    ec_key: Any, other_ec_key: Any
) -> None:
    assertion = sign_client_assertion(
        other_ec_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, kid="k1"
    )
    _client_refused(assertion, jwks(ec_key), "signature does not verify")
    unknown_kid = sign_client_assertion(
        ec_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, kid="k9"
    )
    _client_refused(unknown_kid, jwks(ec_key), "no key in the client's registered key set")


def test_alg_none_and_hmac_client_assertions_are_refused(ec_key: Any) -> None:
    claims = assertion_claims()
    _client_refused(unsigned({"alg": "none", "kid": "k1"}, claims), jwks(ec_key), "not allowed")
    for secret in (public_pem(ec_key), json.dumps(jwks(ec_key)["keys"][0]).encode()):
        token = hs256({"alg": "HS256", "kid": "k1"}, claims, secret)
        _client_refused(token, jwks(ec_key), "not allowed")
    oct_jwks = {"keys": [{"kty": "oct", "k": b64(b"s" * 32), "kid": "k1"}]}
    token = hs256({"alg": "HS256", "kid": "k1"}, claims, b"s" * 32)
    _client_refused(token, oct_jwks, "not allowed")


def test_the_alg_must_fit_the_registered_key(ec_key: Any, ec384_key: Any, rsa_key: Any) -> None:
    rs256 = sign_client_assertion(
        rsa_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, kid="k1", alg="RS256"
    )
    _client_refused(rs256, jwks(rsa_key, alg="PS256"), "no key")  # key registered for PS256
    _client_refused(rs256, jwks(ec_key), "no key")
    es384 = sign_client_assertion(
        ec384_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, kid="k1", alg="ES384"
    )
    _client_refused(es384, jwks(ec_key), "no key")  # a P-256 key cannot verify ES384
    _client_refused(rs256, jwks(rsa_key, use="enc"), "no key")


def test_registered_keys_with_private_material_are_never_used(ec_key: Any) -> None:
    private_jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(ec_key, as_dict=True), "kid": "k1"}
    assertion = sign_client_assertion(
        ec_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, kid="k1"
    )
    _client_refused(assertion, {"keys": [private_jwk]}, "no key")


def test_short_rsa_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(ValueError, match="2048"):
        sign_client_assertion(small, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, alg="RS256")
    token = craft({"alg": "RS256", "kid": "k1"}, assertion_claims(), small, alg="RS256")
    _client_refused(token, jwks(small), "no key")


@pytest.mark.parametrize("typ", ["at+jwt", "dpop+jwt", "application/at+jwt"])
def test_other_kinds_of_token_are_not_client_assertions(ec_key: Any, typ: str) -> None:
    token = craft({"alg": "ES256", "kid": "k1", "typ": typ}, assertion_claims(), ec_key)
    _client_refused(token, jwks(ec_key), "typ of another kind")


@pytest.mark.parametrize("client_jwks", [{}, {"keys": "nope"}, {"keys": []}])
def test_a_client_without_a_usable_key_set_fails(ec_key: Any, client_jwks: Any) -> None:
    assertion = sign_client_assertion(ec_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0)
    with pytest.raises(InvalidClient):
        check_assertion(assertion, client_jwks)


def test_a_tampered_client_assertion_is_refused(ec_key: Any) -> None:
    assertion = sign_client_assertion(
        ec_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0, kid="k1"
    )
    header, _, signature = assertion.split(".")
    forged = segment(assertion_claims(sub="admin", iss="admin"))
    _client_refused(f"{header}.{forged}.{signature}", jwks(ec_key), "signature does not verify")


def test_the_unverified_issuer_only_finds_whose_keys_to_try(ec_key: Any) -> None:
    assertion = sign_client_assertion(ec_key, client_id=CLIENT, audience=TOKEN_ENDPOINT, now=T0)
    assert unverified_issuer(assertion) == CLIENT
    for garbage in ("", "a.b.c", "a.b", f"{segment({})}.{segment([1])}.", "x" * 20_000):
        assert unverified_issuer(garbage) is None
    assert unverified_issuer(f"{segment({})}.{segment({'iss': 5})}.") is None


# --- DPoP proofs ---------------------------------------------------------------------------------


def check_proof(proof: str, **overrides: Any) -> DpopProof:
    arguments: dict[str, Any] = {"method": "GET", "url": RESOURCE, "now": T0, **overrides}
    return verify_dpop_proof(proof, **arguments)


def _dpop_refused(proof: str, match: str, **overrides: Any) -> None:
    with pytest.raises(InvalidDpopProof, match=match) as caught:
        check_proof(proof, **overrides)
    assert (caught.value.code, caught.value.status) == ("invalid_dpop_proof", 401)


def dpop_claims(**changes: Any) -> dict[str, Any]:
    claims = {"jti": "proof-1", "htm": "GET", "htu": RESOURCE, "iat": int(T0.timestamp())}
    return {name: value for name, value in {**claims, **changes}.items() if value is not None}


@pytest.mark.parametrize("key_fixture", ["ec_key", "ec384_key", "rsa_key", "ed_key"])
def test_a_dpop_proof_round_trip(request: pytest.FixtureRequest, key_fixture: str) -> None:
    key = request.getfixturevalue(key_fixture)
    proof = sign_dpop_proof(key, method="GET", url=RESOURCE, now=T0, jti="p-1")
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert "d" not in header["jwk"]
    result = check_proof(proof)
    assert result == DpopProof(jkt=jwk_thumbprint(public_jwk_of(key)), jti="p-1", iat=T0)


def test_a_replayed_proof_returns_the_same_jti_for_the_caller_to_refuse(ec_key: Any) -> None:
    proof = sign_dpop_proof(ec_key, method="GET", url=RESOURCE, now=T0)
    assert check_proof(proof).jti == check_proof(proof, now=T0 + timedelta(seconds=5)).jti


def test_a_proof_binds_the_access_token_by_ath(ec_key: Any) -> None:
    proof = sign_dpop_proof(ec_key, method="GET", url=RESOURCE, now=T0, access_token="tok-1")
    expected = b64(hashlib.sha256(b"tok-1").digest())
    assert jwt.decode(proof, options={"verify_signature": False})["ath"] == expected
    assert access_token_hash("tok-1") == expected
    assert check_proof(proof, access_token="tok-1").jti
    _dpop_refused(proof, "ath does not match", access_token="tok-2")
    without_ath = sign_dpop_proof(ec_key, method="GET", url=RESOURCE, now=T0)
    _dpop_refused(without_ath, "ath does not match", access_token="tok-1")


def test_the_method_must_match(ec_key: Any) -> None:
    proof = sign_dpop_proof(ec_key, method="GET", url=RESOURCE, now=T0)
    _dpop_refused(proof, "another HTTP method", method="POST")
    _dpop_refused(proof, "another HTTP method", method="get")


@pytest.mark.parametrize(
    "url",
    [
        f"{ISSUER}/api/vehicles/v-2/telemetry",
        "http://localhost:8081/api/vehicles/v-1/telemetry",
        "https://localhost:8080/api/vehicles/v-1/telemetry",
        "http://evil.example/api/vehicles/v-1/telemetry",
        f"{ISSUER}/api/vehicles/v-1/telemetry/",
    ],
)
def test_the_url_must_match(ec_key: Any, url: str) -> None:
    proof = sign_dpop_proof(ec_key, method="GET", url=RESOURCE, now=T0)
    _dpop_refused(proof, "another URL", url=url)


@pytest.mark.parametrize(
    ("htu", "url"),
    [
        (f"{RESOURCE}?since=2026-01-01#top", RESOURCE),
        (RESOURCE, f"{RESOURCE}?since=2026-01-01"),
        ("HTTP://LOCALHOST:8080/api/vehicles/v-1/telemetry", RESOURCE),
        ("https://Broker.Example:443/token", "https://broker.example/token"),
        ("http://broker.example", "http://broker.example:80/"),
        ("http://[::1]:8080/token", "http://[::1]:8080/token?x=1"),
    ],
)
def test_htu_ignores_query_fragment_case_and_default_port(ec_key: Any, htu: str, url: str) -> None:
    proof = craft(
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk_of(ec_key)},
        dpop_claims(htu=htu),
        ec_key,
    )
    assert check_proof(proof, url=url).jti == "proof-1"


def test_a_proof_too_old_or_from_the_future_is_refused(ec_key: Any) -> None:
    proof = sign_dpop_proof(ec_key, method="GET", url=RESOURCE, now=T0)
    assert check_proof(proof, now=T0 + timedelta(seconds=300))
    _dpop_refused(proof, "too old", now=T0 + timedelta(seconds=301))
    _dpop_refused(proof, "too old", now=T0 + timedelta(seconds=61), max_age=timedelta(minutes=1))
    assert check_proof(proof, now=T0 - timedelta(seconds=30))  # clock skew within the leeway
    _dpop_refused(proof, "in the future", now=T0 - timedelta(seconds=31))


def test_the_server_nonce_must_match_when_required(ec_key: Any) -> None:
    proof = sign_dpop_proof(ec_key, method="GET", url=RESOURCE, now=T0, nonce="n-1")
    assert check_proof(proof, nonce="n-1").jti
    assert check_proof(proof).jti  # no nonce demanded
    _dpop_refused(proof, "nonce", nonce="n-2")
    without = sign_dpop_proof(ec_key, method="GET", url=RESOURCE, now=T0)
    _dpop_refused(without, "nonce", nonce="n-1")


def test_private_key_material_in_the_jwk_header_is_refused(ec_key: Any, rsa_key: Any) -> None:
    for key, alg in ((ec_key, "ES256"), (rsa_key, "RS256")):
        private_jwk = jwt.get_algorithm_by_name(alg).to_jwk(key, as_dict=True)
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": private_jwk}
        _dpop_refused(craft(header, dpop_claims(), key, alg=alg), "private key material")


@pytest.mark.parametrize(
    ("header_changes", "match"),
    [
        ({"typ": "JWT"}, "typ is not dpop\\+jwt"),
        ({"typ": None}, "typ is not dpop\\+jwt"),
        ({"jwk": None}, "no jwk header"),
        ({"jwk": "not-a-jwk"}, "no jwk header"),
        ({"alg": "ES384"}, "not a usable key"),
        ({"alg": "RS256"}, "not a usable key"),
    ],
)
def test_a_dpop_header_failing_one_check_is_refused(
    ec_key: Any, header_changes: dict[str, Any], match: str
) -> None:
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk_of(ec_key)}
    header.update(header_changes)
    header = {name: value for name, value in header.items() if value is not None}
    _dpop_refused(craft(header, dpop_claims(), ec_key), match)


def test_alg_none_and_hmac_proofs_are_refused(ec_key: Any) -> None:
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": "none", "jwk": public_jwk_of(ec_key)}
    _dpop_refused(unsigned(header, dpop_claims()), "not allowed")
    oct_jwk = {"kty": "oct", "k": b64(b"k" * 32)}
    hmac_header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": oct_jwk}
    _dpop_refused(hs256(hmac_header, dpop_claims(), b"k" * 32), "not allowed")


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused(
    ec_key: Any, other_ec_key: Any
) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk_of(ec_key)}
    _dpop_refused(craft(header, dpop_claims(), other_ec_key), "signature does not verify")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"jti": None}, "lacks a jti"),
        ({"htm": None}, "another HTTP method"),
        ({"htu": None}, "another URL"),
        ({"htu": "not a url"}, "another URL"),
        ({"htu": "ftp://localhost:8080/api/vehicles/v-1/telemetry"}, "another URL"),
        ({"iat": None}, "numeric iat"),
        ({"iat": "now"}, "numeric iat"),
    ],
)
def test_a_dpop_claim_failing_one_check_is_refused(
    ec_key: Any, changes: dict[str, Any], match: str
) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk_of(ec_key)}
    _dpop_refused(craft(header, dpop_claims(**changes), ec_key), match)


def test_an_access_token_is_not_a_dpop_proof(keys: SigningKeys) -> None:
    token, _ = issue(keys)
    _dpop_refused(token, "typ is not dpop\\+jwt")


KeyMaker = Callable[[], Any]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate,
    ],
)
def test_the_dpop_thumbprint_is_the_rfc_7638_thumbprint_of_the_jwk_header(make: KeyMaker) -> None:
    key = make()
    proof = sign_dpop_proof(key, method="POST", url=TOKEN_ENDPOINT, now=T0)
    jwk = jwt.get_unverified_header(proof)["jwk"]
    assert check_proof(proof, method="POST", url=TOKEN_ENDPOINT).jkt == jwk_thumbprint(jwk)
