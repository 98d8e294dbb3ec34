"""DPoP (RFC 9449): sender-constrained access tokens.

A client proves possession of its key with a fresh proof JWT on every request:
at the token endpoint the token is bound to the key's thumbprint (``cnf.jkt``);
at a protected API the proof must match the request's method and URL, the
token (``ath``) and the bound key. Every proof's ``jti`` is remembered in the
database until the proof could no longer be accepted, so a replay is refused
by every broker process. Server nonces (section 8) are stateless: an HMAC of
the current time window under a key derived from the master key, so every
process issues and accepts the same nonces; the previous window's nonce is
still accepted.

https://www.rfc-editor.org/rfc/rfc9449
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from broker.errors import BrokerError
from broker.oauth import jose
from broker.store import oauth as oauth_store

PROOF_MAX_AGE = timedelta(seconds=300)
NONCE_WINDOW = timedelta(minutes=5)
JTI_KIND = "dpop"


class DpopRefused(BrokerError):
    """A proof that does not hold; ``error`` is the RFC 9449 error code."""

    code = "invalid_dpop_proof"
    status = 400
    title = "Invalid DPoP proof"

    def __init__(self, detail: str, *, error: str = "invalid_dpop_proof") -> None:
        super().__init__(detail)
        self.error = error


@dataclass(frozen=True)
class DpopPolicy:
    """How this broker checks proofs: its nonce key, and whether a nonce is required."""

    nonce_key: bytes
    nonce_required: bool = False

    def nonce(self, now: datetime) -> str:
        return self._nonce_for(_window(now))

    def _nonce_for(self, window: int) -> str:
        digest = hmac.new(self.nonce_key, f"dpop-nonce:{window}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:18]).decode("ascii")

    def _nonce_ok(self, nonce: str, now: datetime) -> bool:
        current = _window(now)
        return any(hmac.compare_digest(nonce, self._nonce_for(w)) for w in (current, current - 1))

    def check(
        self,
        session: Session,
        proof: str | None,
        *,
        method: str,
        url: str,
        now: datetime,
        access_token: str | None = None,
    ) -> jose.DpopProof:
        """The verified proof of this request, its ``jti`` now spent; :class:`DpopRefused`
        (``use_dpop_nonce`` when the server's nonce is missing or stale) otherwise."""
        if not proof:
            raise DpopRefused("a DPoP proof is required (DPoP header)")
        nonce: str | None = None
        if self.nonce_required:
            claimed = jose.unverified_claim(proof, "nonce")
            if not isinstance(claimed, str) or not self._nonce_ok(claimed, now):
                raise DpopRefused(
                    "use the server's DPoP-Nonce in the proof", error="use_dpop_nonce"
                )
            nonce = claimed
        try:
            verified = jose.verify_dpop_proof(
                proof,
                method=method,
                url=url,
                now=now,
                access_token=access_token,
                nonce=nonce,
                max_age=PROOF_MAX_AGE,
            )
        except BrokerError as exc:
            raise DpopRefused(exc.detail) from exc
        expires = verified.iat + PROOF_MAX_AGE + jose.DEFAULT_LEEWAY
        if not oauth_store.remember_jti(session, JTI_KIND, verified.jti, expires):
            raise DpopRefused("this DPoP proof was already used")
        return verified


def derive_nonce_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"vehicle-data-broker/dpop-nonce/v1", hashlib.sha256).digest()


def _window(now: datetime) -> int:
    return int(now.timestamp() // NONCE_WINDOW.total_seconds())
