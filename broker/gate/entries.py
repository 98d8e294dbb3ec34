"""What an audit entry takes from the contract and the transfer check it was decided under.

Every kind of gate entry (release, listing, event, eligibility) records the contract's
version, protection level and legal basis and the transfer's destinations and
mechanisms the same way; they are built here once.
"""

from __future__ import annotations

from typing import Any

from broker.domain.contracts import Contract
from broker.transfer.check import TransferDecision


def decided_under(contract: Contract | None, transfer: TransferDecision | None) -> dict[str, Any]:
    """The :class:`~broker.audit.entry.AuditEntry` fields of ``contract`` and ``transfer``
    (empty where either is unknown: a refusal before the contract or the check)."""
    countries, mechanisms = transfer.audit_fields() if transfer is not None else ((), ())
    fields: dict[str, Any] = {
        "destination_countries": countries,
        "transfer_mechanisms": mechanisms,
    }
    if contract is not None:
        fields |= {
            "contract_version": contract.version,
            "protection": contract.protection.level.value,
            "legal_basis": contract.legal_basis.value,
        }
    return fields
