"""OAuth scopes: one per data category (``vehicle.status:read``, from the catalogue), plus
``ingest`` and ``holders`` for the car maker's backend and the customer app's own scopes.

| scope | who | grants |
|---|---|---|
| ``<category>:read`` | recipients | reading that category of the vehicles their grants cover |
| ``ingest`` | the car maker's backend | sending telemetry to ``/v1/ingest/records`` |
| ``holders`` | the car maker's backend | reporting holder changes to ``/v1/holders/changes`` |
| ``grants:read`` / ``grants:write`` | the customer app | seeing / revoking the customer's grants |
| ``data:read`` / ``data:export`` | the customer app | the customer's own data and its copy |
"""

from __future__ import annotations

from broker.documents import DocumentLibrary

CUSTOMER_APP_SCOPES = ("openid", "grants:read", "grants:write", "data:read", "data:export")
INGEST = "ingest"
HOLDERS = "holders"


def supported_scopes(library: DocumentLibrary) -> list[str]:
    return sorted({c.scope for c in library.catalogue} | {INGEST, HOLDERS, *CUSTOMER_APP_SCOPES})
