"""The one module that signs and verifies JWTs: access tokens, client assertions, DPoP proofs.

Built on PyJWT; ``authlib.jose`` is never imported. Three kinds of JWT, each
told apart by its ``typ`` header and checked against its own algorithm list
(RFC 8725 sections 2.1, 3.1 and 3.11):

- **access tokens** (RFC 9068): ``typ: at+jwt``, ES256 only, signed by the
  broker's current key (:mod:`broker.oauth.keys`) and verified by ``kid``;
- **client assertions** for ``private_key_jwt`` client authentication
  (RFC 7523 section 2.2, OpenID Connect Core section 9), verified with the
  client's registered JWK Set;
- **DPoP proofs** (RFC 9449), verified with the public key in their own
  ``jwk`` header, whose RFC 7638 thumbprint binds the access token.

``alg: none`` and every HMAC algorithm are refused everywhere, so a token
"signed" with a public key used as an HMAC secret never verifies. Time comes
from the caller's ``now`` (the broker's controllable clock): PyJWT's own time
checks read the wall clock, so they are switched off and done here. Replay
(a ``jti`` seen twice) is the caller's check: these functions return the
``jti`` for it to store.

https://www.rfc-editor.org/rfc/rfc9068, https://www.rfc-editor.org/rfc/rfc7523,
https://www.rfc-editor.org/rfc/rfc9449, https://www.rfc-editor.org/rfc/rfc8725
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from broker.clock import ensure_utc
from broker.errors import BrokerError
from broker.oauth.keys import ALGORITHM, SigningKeys, jwk_thumbprint

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type, not a secret)
DPOP_TYP = "dpop+jwt"
#: Longer compact JWTs are refused before any parsing.
MAX_JWT_LENGTH = 16 * 1024
DEFAULT_LEEWAY = timedelta(seconds=30)
#: The claims every access token carries (RFC 9068 section 2.2).
ACCESS_TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")

#: Asymmetric algorithms accepted from clients, with the key type (and curve) each needs.
#: ``Ed25519`` is the fully-specified name of RFC 9864 for what ``EdDSA`` meant.
CLIENT_ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
}
MIN_RSA_BITS = 2048

_CLIENT_ASSERTION_TYPS = frozenset({"jwt", "client-authentication+jwt"})
_RESERVED_CLAIMS = frozenset({*ACCESS_TOKEN_CLAIMS, "nbf", "scope", "cnf"})
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKeyInput = PrivateKey | str | bytes | Mapping[str, Any]
_PRIVATE_KEY_TYPES = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)

_FROM_JWK: Mapping[str, Callable[[dict[str, Any]], Any]] = {
    "EC": ECAlgorithm.from_jwk,
    "RSA": RSAAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}


def _jws() -> jwt.PyJWS:
    signer = jwt.PyJWS(algorithms=[alg for alg in CLIENT_ALGORITHMS if alg != "Ed25519"])
    signer.register_algorithm("Ed25519", OKPAlgorithm())
    return signer


#: Signs and checks signatures of client-made JWTs (whose algorithm names
#: include RFC 9864's ``Ed25519``, unknown to PyJWT's default registry).
_JWS = _jws()


class InvalidToken(BrokerError):
    """An access token that is malformed, forged, expired or meant for someone else."""

    code = "invalid_token"
    status = 401
    title = "Invalid access token"


class InvalidClient(BrokerError):
    """Client authentication failed (RFC 6749 section 5.2)."""

    code = "invalid_client"
    status = 401
    title = "Client authentication failed"


class InvalidDpopProof(BrokerError):
    """A DPoP proof that does not prove possession for this request (RFC 9449 section 7.1)."""

    code = "invalid_dpop_proof"
    status = 401
    title = "Invalid DPoP proof"


@dataclass(frozen=True)
class DpopProof:
    """What a valid DPoP proof tells: the key's thumbprint, the proof's id and time."""

    jkt: str
    jti: str
    iat: datetime


# --- access tokens (RFC 9068) -------------------------------------------------------------


def issue_access_token(
    keys: SigningKeys,
    *,
    issuer: str,
    audience: str,
    subject: str,
    client_id: str,
    scope: str | Iterable[str],
    lifetime: timedelta,
    now: datetime,
    jti: str | None = None,
    extra: Mapping[str, Any] | None = None,
    cnf_jkt: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sign an RFC 9068 access token with the current key; return it and its claims.

    ``scope`` is a space-separated string or an iterable of scope tokens;
    ``extra`` adds claims such as ``grants`` or ``token_kind`` but may not
    replace a registered one; ``cnf_jkt`` binds the token to a DPoP key.
    """
    if lifetime <= timedelta(0):
        raise ValueError("an access token lifetime must be positive")
    issued = int(ensure_utc(now).timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": issued + math.ceil(lifetime.total_seconds()),
        "iat": issued,
        "nbf": issued,
        "jti": jti or new_jti(),
        "client_id": client_id,
        "scope": scope_string(scope),
    }
    if extra:
        clash = _RESERVED_CLAIMS.intersection(extra)
        if clash:
            raise ValueError(f"extra claims may not replace {sorted(clash)}")
        claims.update(extra)
    if cnf_jkt is not None:
        claims["cnf"] = {"jkt": cnf_jkt}
    key = keys.current
    headers = {"typ": ACCESS_TOKEN_TYP, "kid": key.kid}
    return _sign(claims, key.private_key, ALGORITHM, headers), claims


def verify_access_token(
    token: str,
    keys: SigningKeys,
    *,
    issuer: str,
    audience: str,
    now: datetime,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> dict[str, Any]:
    """The claims of a valid access token; :class:`InvalidToken` otherwise.

    Valid means: ``typ`` at+jwt, ES256, signed by a published key (by
    ``kid``), issued by ``issuer`` for ``audience``, within its validity at
    ``now`` (give or take ``leeway``), with every claim RFC 9068 requires.
    """
    what = "access token"
    header = _header(token, InvalidToken, what)
    if not _media_type_in(header.get("typ"), {ACCESS_TOKEN_TYP}):
        raise InvalidToken("the token is not a JWT access token (typ must be at+jwt)")
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("the access token is not signed with ES256")
    kid = header.get("kid")
    public_key = keys.public_key(kid) if isinstance(kid, str) else None
    if public_key is None:
        raise InvalidToken("the access token names no signing key the broker publishes")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={
                "require": list(ACCESS_TOKEN_CLAIMS),
                "verify_signature": True,
                "verify_aud": True,
                "verify_iss": True,
                "verify_sub": True,
                "verify_jti": True,
                # Checked below against ``now``: PyJWT would read the wall clock.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise InvalidToken("the access token signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"the access token lacks the {exc.claim} claim") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("the access token was issued by another issuer") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("the access token is meant for another audience") from None
    except jwt.PyJWTError:
        raise InvalidToken("the access token is malformed") from None
    for name in ("sub", "jti", "client_id"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise InvalidToken(f"the access token's {name} claim is not a non-empty string")
    if not isinstance(claims.get("scope", ""), str):
        raise InvalidToken("the access token's scope claim is not a string")
    _check_times(claims, now=now, leeway=leeway, error=InvalidToken, what=what, require_iat=True)
    return claims


# --- client authentication by private_key_jwt (RFC 7523 section 2.2) ------------------------


def verify_client_assertion(
    assertion: str,
    *,
    client_id: str,
    client_jwks: Mapping[str, Any],
    token_endpoint: str,
    issuer: str,
    now: datetime,
    max_lifetime: timedelta = timedelta(minutes=5),
    leeway: timedelta = DEFAULT_LEEWAY,
) -> dict[str, Any]:
    """The claims of a valid client assertion; :class:`InvalidClient` otherwise.

    Valid means: signed with an allowed asymmetric algorithm by a key of the
    client's JWK Set (the one its ``kid`` names, or any of the right type when
    it names none); ``iss`` and ``sub`` both ``client_id``; ``aud`` the token
    endpoint or the issuer; ``exp`` present, not past and at most
    ``max_lifetime`` ahead; ``jti`` present. The caller must refuse a ``jti``
    it has seen before (until that assertion's ``exp``).
    """
    what = "client assertion"
    header = _header(assertion, InvalidClient, what)
    typ = header.get("typ")
    if typ is not None and not _media_type_in(typ, _CLIENT_ASSERTION_TYPS):
        raise InvalidClient("the client assertion has the typ of another kind of token")
    alg = _client_algorithm(header, InvalidClient, what)
    kid = header.get("kid")
    candidates = [
        key
        for jwk in _jwk_list(client_jwks)
        if kid is None or jwk.get("kid") == kid
        if (key := _verification_key(jwk, alg)) is not None
    ]
    if not candidates:
        raise InvalidClient("no key in the client's registered key set fits the assertion")
    claims = None
    for key in candidates:
        claims = _verified_claims(assertion, key, alg, InvalidClient, what)
        if claims is not None:
            break
    if claims is None:
        raise InvalidClient("the client assertion signature does not verify")
    if claims.get("iss") != client_id:
        raise InvalidClient("the client assertion's iss is not the client id")
    if claims.get("sub") != client_id:
        raise InvalidClient("the client assertion's sub is not the client id")
    audiences = claims.get("aud")
    if isinstance(audiences, str):
        audiences = [audiences]
    if not isinstance(audiences, list) or not any(
        aud in (token_endpoint, issuer) for aud in audiences if isinstance(aud, str)
    ):
        raise InvalidClient("the client assertion's aud is neither the token endpoint nor issuer")
    _check_jti(claims, InvalidClient, what)
    _check_times(
        claims,
        now=now,
        leeway=leeway,
        error=InvalidClient,
        what=what,
        require_iat=False,
        max_lifetime=max_lifetime,
    )
    return claims


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` of a JWT read *before* any check, or ``None``.

    Only for finding whose key set should verify a client assertion that came
    without a ``client_id``; never trust anything else read this way.
    """
    issuer = unverified_claim(token, "iss")
    return issuer if isinstance(issuer, str) and issuer else None


def unverified_claim(token: str, name: str) -> object:
    """One claim of a JWT read *before* any check (``None`` if absent or unreadable).

    Only to pick what the real check compares against (the key set, the server
    nonce); the token is verified afterwards.
    """
    if not isinstance(token, str) or len(token) > MAX_JWT_LENGTH or token.count(".") != 2:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    except (ValueError, RecursionError):
        return None
    return claims.get(name) if isinstance(claims, dict) else None


def sign_client_assertion(
    private_key_pem_or_jwk: PrivateKeyInput,
    *,
    client_id: str,
    audience: str,
    now: datetime,
    kid: str | None = None,
    alg: str = "ES256",
    lifetime: timedelta = timedelta(minutes=1),
    jti: str | None = None,
) -> str:
    """A ``private_key_jwt`` client assertion, as a client (or a test) makes one.

    The key is a PEM private key, a private JWK (whose ``kid`` is used when
    ``kid`` is not given) or a ``cryptography`` private key.
    """
    key = load_private_key(private_key_pem_or_jwk)
    _require_fit(alg, key.public_key())
    if kid is None and isinstance(private_key_pem_or_jwk, Mapping):
        jwk_kid = private_key_pem_or_jwk.get("kid")
        kid = jwk_kid if isinstance(jwk_kid, str) else None
    issued = int(ensure_utc(now).timestamp())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + math.ceil(lifetime.total_seconds()),
        "jti": jti or new_jti(),
    }
    headers: dict[str, Any] = {"typ": "JWT"}
    if kid is not None:
        headers["kid"] = kid
    return _sign(claims, key, alg, headers)


# --- DPoP proofs (RFC 9449) ------------------------------------------------------------------


def verify_dpop_proof(
    proof: str,
    *,
    method: str,
    url: str,
    now: datetime,
    access_token: str | None = None,
    nonce: str | None = None,
    max_age: timedelta = timedelta(seconds=300),
    leeway: timedelta = DEFAULT_LEEWAY,
) -> DpopProof:
    """Check a DPoP proof for one request (RFC 9449 section 4.3); return its key thumbprint.

    ``method`` and ``url`` are the request's; ``url``'s query and fragment are
    ignored. With ``access_token``, the proof's ``ath`` must be its hash; with
    ``nonce``, the proof must carry that server nonce. The proof's ``iat`` must
    be at most ``max_age`` old and at most ``leeway`` ahead. The caller refuses
    a ``jti`` it has seen within ``max_age``.
    """
    what = "DPoP proof"
    header = _header(proof, InvalidDpopProof, what)
    if not _media_type_in(header.get("typ"), {DPOP_TYP}):
        raise InvalidDpopProof("the DPoP proof's typ is not dpop+jwt")
    alg = _client_algorithm(header, InvalidDpopProof, what)
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDpopProof("the DPoP proof has no jwk header")
    if _PRIVATE_JWK_MEMBERS.intersection(jwk):
        raise InvalidDpopProof("the DPoP proof's jwk header holds private key material")
    key = _verification_key(jwk, alg)
    if key is None:
        raise InvalidDpopProof("the DPoP proof's jwk header is not a usable key for its alg")
    claims = _verified_claims(proof, key, alg, InvalidDpopProof, what)
    if claims is None:
        raise InvalidDpopProof("the DPoP proof signature does not verify")
    jti = _check_jti(claims, InvalidDpopProof, what)
    if claims.get("htm") != method:
        raise InvalidDpopProof("the DPoP proof was made for another HTTP method")
    htu = claims.get("htu")
    expected_htu = _normalised_htu(url)
    if expected_htu is None:
        raise ValueError("the request URL is not an absolute http(s) URL")
    if not isinstance(htu, str) or _normalised_htu(htu) != expected_htu:
        raise InvalidDpopProof("the DPoP proof was made for another URL")
    iat = _instant(claims.get("iat"))
    if iat is None:
        raise InvalidDpopProof("the DPoP proof lacks a numeric iat claim")
    now_ts = ensure_utc(now).timestamp()
    if iat > now_ts + leeway.total_seconds():
        raise InvalidDpopProof("the DPoP proof was issued in the future")
    if iat < now_ts - max_age.total_seconds():
        raise InvalidDpopProof("the DPoP proof is too old")
    if access_token is not None:
        ath = claims.get("ath")
        expected_ath = access_token_hash(access_token)
        if not isinstance(ath, str) or not hmac.compare_digest(ath, expected_ath):
            raise InvalidDpopProof("the DPoP proof's ath does not match the access token")
    if nonce is not None:
        proof_nonce = claims.get("nonce")
        if not isinstance(proof_nonce, str) or not hmac.compare_digest(proof_nonce, nonce):
            raise InvalidDpopProof("the DPoP proof does not carry the server's nonce")
    return DpopProof(jkt=jwk_thumbprint(jwk), jti=jti, iat=datetime.fromtimestamp(iat, UTC))


def sign_dpop_proof(
    private_key: PrivateKeyInput,
    *,
    method: str,
    url: str,
    now: datetime,
    access_token: str | None = None,
    nonce: str | None = None,
    jti: str | None = None,
    alg: str | None = None,
) -> str:
    """A DPoP proof for one request, as a client (or a test) makes one.

    ``alg`` defaults to the key's natural algorithm (ES256, ES384, RS256, EdDSA).
    """
    key = load_private_key(private_key)
    alg = alg or _natural_algorithm(key)
    _require_fit(alg, key.public_key())
    parts = urlsplit(url)
    claims: dict[str, Any] = {
        "jti": jti or new_jti(),
        "htm": method,
        "htu": parts._replace(query="", fragment="").geturl(),
        "iat": int(ensure_utc(now).timestamp()),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    headers = {"typ": DPOP_TYP, "jwk": public_jwk_of(key)}
    return _sign(claims, key, alg, headers)


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url(SHA-256(the access token's ASCII)), RFC 9449 section 4.2."""
    return _b64url(hashlib.sha256(access_token.encode("ascii")).digest())


# --- keys -------------------------------------------------------------------------------------


def load_private_key(value: PrivateKeyInput) -> PrivateKey:
    """A private key from PEM (PKCS #8 or traditional), a private JWK or a key object."""
    key: object
    if isinstance(value, _PRIVATE_KEY_TYPES):
        key = value
    elif isinstance(value, Mapping):
        kty = value.get("kty")
        from_jwk = _FROM_JWK.get(kty) if isinstance(kty, str) else None
        if from_jwk is None or "d" not in value:
            raise ValueError("a private JWK needs kty EC, RSA or OKP and its 'd' member")
        key = from_jwk(dict(value))
    elif isinstance(value, str | bytes):
        data = value.encode("ascii") if isinstance(value, str) else value
        key = serialization.load_pem_private_key(data, password=None)
    else:
        raise TypeError("expected a PEM private key, a private JWK or a private key object")
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise ValueError("only EC, RSA and Ed25519 private keys sign client JWTs")
    return key


def public_jwk_of(key: PrivateKey | PublicKey) -> dict[str, Any]:
    """The public JWK of a key (never a private member)."""
    public = key.public_key() if isinstance(key, _PRIVATE_KEY_TYPES) else key
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(public, as_dict=True)
    if isinstance(public, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(public, as_dict=True)
    return OKPAlgorithm.to_jwk(public, as_dict=True)


def new_jti() -> str:
    """A fresh, unguessable JWT id."""
    return secrets.token_urlsafe(18)


def scope_string(scope: str | Iterable[str]) -> str:
    """Scope tokens as one space-separated string, duplicates dropped (RFC 6749 section 3.3)."""
    tokens = scope.split() if isinstance(scope, str) else list(scope)
    seen: dict[str, None] = {}
    for token in tokens:
        if not isinstance(token, str) or not _SCOPE_TOKEN.fullmatch(token):
            raise ValueError("a scope token is printable ASCII without spaces, '\"' or '\\'")
        seen.setdefault(token, None)
    return " ".join(seen)


# --- internals --------------------------------------------------------------------------------


def _sign(claims: Mapping[str, Any], key: PrivateKey, alg: str, headers: dict[str, Any]) -> str:
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _JWS.encode(payload, key, algorithm=alg, headers=headers)


def _header(token: object, error: type[BrokerError], what: str) -> dict[str, Any]:
    """The unverified header of a compact JWS, after the checks that need no key."""
    if not isinstance(token, str) or not token:
        raise error(f"the {what} is missing")
    if len(token) > MAX_JWT_LENGTH:
        raise error(f"the {what} is too long")
    if token.count(".") != 2:
        raise error(f"the {what} is not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise error(f"the {what} is not a well-formed JWT") from None
    if "crit" in header or "b64" in header:
        raise error(f"the {what} carries a critical header the broker does not support")
    return header


def _media_type_in(value: object, accepted: set[str] | frozenset[str]) -> bool:
    """``typ`` compare: case-insensitive, the ``application/`` prefix optional (RFC 7515 4.1.9)."""
    if not isinstance(value, str):
        return False
    lowered = value.lower()
    return lowered.removeprefix("application/") in accepted and lowered.count("/") <= 1


def _client_algorithm(header: Mapping[str, Any], error: type[BrokerError], what: str) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in CLIENT_ALGORITHMS:
        allowed = ", ".join(CLIENT_ALGORITHMS)
        raise error(f"the {what}'s algorithm is not allowed (allowed: {allowed})")
    return alg


def _jwk_list(jwks: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise InvalidClient("the client has no registered JWK Set")
    return [jwk for jwk in keys if isinstance(jwk, Mapping)]


def _verification_key(jwk: Mapping[str, Any], alg: str) -> PublicKey | None:
    """The public key of ``jwk`` when it may verify ``alg``; ``None`` otherwise.

    A JWK with private members, another ``use``, another ``alg`` or the wrong
    type (or curve, or a short RSA modulus) never verifies anything.
    """
    kty, crv = CLIENT_ALGORITHMS[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        return None
    if _PRIVATE_JWK_MEMBERS.intersection(jwk) or jwk.get("use", "sig") != "sig":
        return None
    declared = jwk.get("alg")
    if declared is not None and declared != alg and {declared, alg} != {"EdDSA", "Ed25519"}:
        return None
    try:
        key = _FROM_JWK[kty](dict(jwk))
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    return key if _fits(alg, key) else None


def _fits(alg: str, key: object) -> bool:
    kty, crv = CLIENT_ALGORITHMS[alg]
    if kty == "EC":
        curve = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}[crv or ""]
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve)
    if kty == "RSA":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    return isinstance(key, ed25519.Ed25519PublicKey)


def _require_fit(alg: str, public_key: PublicKey) -> None:
    if alg not in CLIENT_ALGORITHMS or not _fits(alg, public_key):
        raise ValueError(f"{alg} cannot be used with this key (RSA needs {MIN_RSA_BITS} bits)")


def _natural_algorithm(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES384" if isinstance(key.curve, ec.SECP384R1) else "ES256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return "EdDSA"


def _verified_claims(
    token: str, key: PublicKey, alg: str, error: type[BrokerError], what: str
) -> dict[str, Any] | None:
    """The claims when ``key`` verifies ``token``; ``None`` on a bad signature."""
    try:
        decoded = _JWS.decode_complete(
            token,
            key=key,
            algorithms=[alg],
            options={"verify_signature": True, "enforce_minimum_key_length": True},
        )
    except jwt.InvalidSignatureError:
        return None
    except jwt.PyJWTError:
        raise error(f"the {what} is malformed") from None
    try:
        claims = json.loads(decoded["payload"])
    except (ValueError, RecursionError):
        raise error(f"the {what} payload is not JSON") from None
    if not isinstance(claims, dict):
        raise error(f"the {what} payload is not a JSON object")
    return claims


def _check_jti(claims: Mapping[str, Any], error: type[BrokerError], what: str) -> str:
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise error(f"the {what} lacks a jti claim")
    if len(jti) > 256:
        raise error(f"the {what}'s jti is too long")
    return jti


def _instant(value: object) -> float | None:
    """A NumericDate as seconds, or ``None`` when ``value`` is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _check_times(
    claims: Mapping[str, Any],
    *,
    now: datetime,
    leeway: timedelta,
    error: type[BrokerError],
    what: str,
    require_iat: bool,
    max_lifetime: timedelta | None = None,
) -> None:
    """``exp``, ``nbf`` and ``iat`` against the caller's clock (RFC 7519 section 4.1)."""
    now_ts = ensure_utc(now).timestamp()
    slack = leeway.total_seconds()
    exp = _instant(claims.get("exp"))
    if exp is None:
        raise error(f"the {what} lacks a numeric exp claim")
    if exp <= now_ts - slack:
        raise error(f"the {what} has expired")
    if max_lifetime is not None and exp > now_ts + max_lifetime.total_seconds() + slack:
        raise error(f"the {what} expires too far in the future")
    if "nbf" in claims:
        nbf = _instant(claims["nbf"])
        if nbf is None:
            raise error(f"the {what}'s nbf claim is not a number")
        if nbf > now_ts + slack:
            raise error(f"the {what} is not valid yet")
    if "iat" in claims or require_iat:
        iat = _instant(claims.get("iat"))
        if iat is None:
            raise error(f"the {what} lacks a numeric iat claim")
        if iat > now_ts + slack:
            raise error(f"the {what} was issued in the future")
        if max_lifetime is not None and iat < now_ts - max_lifetime.total_seconds() - slack:
            raise error(f"the {what} was issued too long ago")


def _normalised_htu(url: str) -> str | None:
    """Scheme and host lower-cased, default port dropped, query and fragment ignored."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
