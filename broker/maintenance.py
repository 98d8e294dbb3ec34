"""The broker's periodic housekeeping, run by ``broker serve`` every ``BROKER_PURGE_INTERVAL``:

1. the retention purge (each kind purged is an audit entry);
2. expired customer sessions and stale login-failure counts deleted;
3. a signed audit checkpoint, so that truncating the log's tail is detectable
   up to the last interval.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session

from broker.bootstrap import Broker
from broker.services.retention import parse_overrides, purge
from broker.store import audit as audit_store
from broker.store import rate_limits
from broker.web.login import forget_stale_failures
from broker.web.sessions import purge_expired_sessions

log = logging.getLogger(__name__)


def housekeeping(broker: Broker) -> dict[str, Any]:
    """One round of housekeeping, in one transaction; returns what it did."""
    overrides = parse_overrides(broker.settings.retention_overrides, broker.documents.catalogue)
    signer = broker.audit_signer()
    now = broker.clock.now()

    def work(session: Session) -> dict[str, Any]:
        report = purge(session, now=now, catalogue=broker.documents.catalogue, overrides=overrides)
        sessions = purge_expired_sessions(session, now)
        failures = forget_stale_failures(session, now)
        windows = rate_limits.purge(session, now)
        checkpoint = audit_store.write_checkpoint(session, signer, now)
        return {
            "purged": report.as_dict(),
            "sessions_deleted": sessions,
            "login_failures_forgotten": failures,
            "rate_windows_dropped": windows,
            "audit_checkpoint": {"size": checkpoint.size, "root": checkpoint.root_hex},
        }

    return broker.database.run_sync(work, write=True)
