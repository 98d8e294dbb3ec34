"""The authorization server's ES256 signing keys: loaded once, rotated by ``kid``.

A key directory (default ``var/oauth-keys/``) holds one unencrypted PEM PKCS #8
EC P-256 private key per file, named ``<kid>.pem``. One key signs: the one a
``current`` marker file names or, without a marker, the newest file. Every other
key stays published in the JWK Set, so tokens it signed keep verifying until an
operator removes its file; that is rotation with ``kid`` (RFC 7517, RFC 7515
section 4.1.4). New keys are named by their RFC 7638 thumbprint.

Keys are read once, at start-up (:meth:`SigningKeys.load`): loading a PEM per
request is slow, and a rotation takes effect at the next start.

https://www.rfc-editor.org/rfc/rfc7517 and https://www.rfc-editor.org/rfc/rfc7638
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from broker.errors import ConfigurationError

#: Where ``broker serve`` keeps its signing keys unless told otherwise.
#: The file naming the signing key, by its ``kid``, when present.
CURRENT_MARKER = "current"
#: The one algorithm the broker signs with.
ALGORITHM = "ES256"

_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_THUMBPRINT_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint of a JWK: base64url(SHA-256(required members, canonical)).

    Only the members RFC 7638 section 3.2 requires for the key type count, so a
    public key and its private JWK, or a JWK with ``kid``/``use``/``alg``, share
    one thumbprint. Raises :class:`ValueError` for an unknown ``kty`` or a
    missing member.
    """
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise ValueError("a JWK thumbprint needs kty EC, RSA, OKP or oct")
    required: dict[str, str] = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"a {kty} JWK needs a non-empty {name!r} member")
        required[name] = value
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The public JWK (``kty``, ``crv``, ``x``, ``y``) of an EC key; never ``d``."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return ECAlgorithm.to_jwk(public, as_dict=True)


@dataclass(frozen=True)
class SigningKey:
    """One ES256 key pair and the ``kid`` tokens name it by."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not _KID.fullmatch(self.kid):
            raise ConfigurationError(
                "an OAuth signing key id is 1 to 128 letters, digits, '-' or '_'"
            )
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.private_key.curve, ec.SECP256R1
        ):
            raise ConfigurationError(f"the OAuth signing key {self.kid} is not an EC P-256 key")

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, Any]:
        """The public JWK with ``kid``, ``alg`` and ``use``, as published."""
        return {**public_jwk(self.private_key), "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


class SigningKeys:
    """The broker's signing keys: one current key that signs, all of them verifying."""

    def __init__(self, keys: Iterable[SigningKey], *, current_kid: str) -> None:
        by_kid: dict[str, SigningKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ConfigurationError(f"two OAuth signing keys share the kid {key.kid}")
            by_kid[key.kid] = key
        if current_kid not in by_kid:
            raise ConfigurationError(f"the current OAuth signing key {current_kid} is missing")
        self._keys = by_kid
        self._current = by_kid[current_kid]
        self._public = {kid: key.public_key for kid, key in by_kid.items()}
        others = sorted(kid for kid in by_kid if kid != current_kid)
        self._jwks = [self._current.jwk(), *(by_kid[kid].jwk() for kid in others)]

    @classmethod
    def generate(cls) -> SigningKeys:
        """One fresh key, in memory only: for tests and throw-away demos."""
        key = _new_key()
        return cls([key], current_kid=key.kid)

    @classmethod
    def load(cls, directory: Path, *, create: bool = True) -> SigningKeys:
        """Read every ``<kid>.pem`` in ``directory`` once.

        An empty (or missing) directory gets a first key, mode 0600, when
        ``create`` is true; otherwise it is a :class:`ConfigurationError`, as is
        an unreadable key, a key that is not EC P-256, a file name that is not a
        valid ``kid``, or a ``current`` marker naming no key.
        """
        directory = Path(directory)
        if not directory.is_dir():
            if not create:
                raise ConfigurationError(f"the OAuth key directory {directory} does not exist")
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = sorted(directory.glob("*.pem"))
        if not files:
            if not create:
                raise ConfigurationError(f"the OAuth key directory {directory} holds no key")
            rotate(directory)
            files = sorted(directory.glob("*.pem"))
        keys = [_read_key(path) for path in files]
        return cls(keys, current_kid=_current_kid(directory, files))

    @property
    def current_kid(self) -> str:
        return self._current.kid

    @property
    def current(self) -> SigningKey:
        """The key that signs new tokens."""
        return self._current

    @property
    def kids(self) -> tuple[str, ...]:
        """Every published ``kid``, the current one first."""
        return tuple(jwk["kid"] for jwk in self._jwks)

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The public key named ``kid``, or ``None`` when no such key is published."""
        return self._public.get(kid)

    def jwks(self) -> dict[str, Any]:
        """The RFC 7517 JWK Set of the public keys (the current key first)."""
        return {"keys": [dict(jwk) for jwk in self._jwks]}

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"SigningKeys(current={self.current_kid!r}, kids={list(self.kids)!r})"


def rotate(directory: Path) -> str:
    """Write a new key to ``directory`` (mode 0600), make it current, return its ``kid``.

    Older keys stay in the directory, hence in the JWK Set, until removed. The
    running broker keeps signing with the key it loaded until it restarts.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = _new_key()
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(directory / f"{key.kid}.pem", pem, mode=0o600)
    _write_atomically(directory / CURRENT_MARKER, f"{key.kid}\n".encode("ascii"), mode=0o600)
    return key.kid


def _new_key() -> SigningKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    return SigningKey(kid=jwk_thumbprint(public_jwk(private_key)), private_key=private_key)


def _read_key(path: Path) -> SigningKey:
    kid = path.name.removesuffix(".pem")
    if not _KID.fullmatch(kid):
        raise ConfigurationError(
            f"the OAuth key file {path.name} is not named <kid>.pem "
            "(a kid is 1 to 128 letters, digits, '-' or '_')"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot load the OAuth signing key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"the OAuth signing key {path} is not an EC P-256 key")
    return SigningKey(kid=kid, private_key=key)


def _current_kid(directory: Path, files: list[Path]) -> str:
    marker = directory / CURRENT_MARKER
    if marker.is_file():
        kid = marker.read_text(encoding="ascii", errors="replace").strip()
        if not any(path.name == f"{kid}.pem" for path in files):
            raise ConfigurationError(
                f"{marker} names no key in {directory}: write the kid of an existing key"
            )
        return kid
    newest = max(files, key=lambda path: (path.stat().st_mtime_ns, path.name))
    return newest.name.removesuffix(".pem")


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # whatever the umask
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
