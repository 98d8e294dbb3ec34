"""The car maker's backend as a client: a configured service credential (HTTP Basic).

Until the authorization server issues client-credentials tokens (issue 5), the
ingest API authenticates the backend by its OAuth client id and secret
(``oauth_client`` rows of kind ``backend``), compared in constant time.
"""

from __future__ import annotations

from sqlmodel import Session

from broker.credentials import digest_client_secret, verify_client_secret
from broker.store.tables import OAuthClientRow

_DUMMY_DIGEST = digest_client_secret("not-a-client-secret")


def authenticate_backend(session: Session, client_id: str, secret: str) -> bool:
    row = session.get(OAuthClientRow, client_id) if len(client_id) <= 128 else None
    usable = row is not None and row.kind == "backend" and row.status == "active"
    digest = row.secret_digest if usable and row is not None and row.secret_digest else None
    matches = verify_client_secret(digest or _DUMMY_DIGEST, secret)
    return usable and digest is not None and matches
