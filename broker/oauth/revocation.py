"""The token side of a revocation: when a grant ends, its tokens stop working at once.

Registered with the gate's revocation listeners, so it runs in the same
transaction as the grant's end: refresh-token families that carry the grant are
revoked, and access tokens that rely on it are put on the revocation list (they
would fail anyway on their next use, where the grant is checked).
"""

from __future__ import annotations

from sqlmodel import Session

from broker.gate.revocation import GrantEnded
from broker.store import oauth as oauth_store


def revoke_grant_tokens(session: Session, ended: GrantEnded) -> None:
    grant = ended.grant
    for family in oauth_store.families_for_grant(session, grant.id, grant.customer_id):
        oauth_store.revoke_family(session, family, ended.at)
    oauth_store.revoke_access_tokens_for_grant(session, grant.id, ended.at)
