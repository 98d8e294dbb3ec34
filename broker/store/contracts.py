"""Contract persistence: every version of every contract, as loaded."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from broker.domain.contracts import Contract
from broker.store.tables import ContractRow


def digest(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


#: Parsed contracts by (id, version, digest): a stored version never changes, so a
#: release parses each version once per process, not once per request.
_PARSED: dict[tuple[str, int, str], Contract] = {}
_PARSED_LIMIT = 1024


def _parsed(session: Session, contract_id: str, version: int, row_digest: str) -> Contract:
    key = (contract_id, version, row_digest)
    found = _PARSED.get(key)
    if found is None:
        row = session.get(ContractRow, (contract_id, version))
        assert row is not None
        found = Contract.from_document(row.document)
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[key] = found
    return found


def get(session: Session, contract_id: str, version: int) -> Contract | None:
    found = session.exec(
        select(ContractRow.digest).where(
            ContractRow.id == contract_id, ContractRow.version == version
        )
    ).first()
    return _parsed(session, contract_id, version, found) if found else None


def latest(session: Session, contract_id: str) -> Contract | None:
    found = session.exec(
        select(ContractRow.version, ContractRow.digest)
        .where(ContractRow.id == contract_id)
        .order_by(col(ContractRow.version).desc())
        .limit(1)
    ).first()
    return _parsed(session, contract_id, found[0], found[1]) if found else None


def stored_digest(session: Session, contract_id: str, version: int) -> str | None:
    row = session.get(ContractRow, (contract_id, version))
    return row.digest if row else None


def add(session: Session, contract: Contract, *, at: datetime) -> None:
    document = dict(contract.document)
    session.add(
        ContractRow(
            id=contract.id,
            version=contract.version,
            recipient_id=contract.recipient,
            document=document,
            digest=digest(document),
            loaded_at=at,
        )
    )
    session.flush()


def all_latest(session: Session) -> list[Contract]:
    rows = session.exec(
        select(ContractRow).order_by(col(ContractRow.id), col(ContractRow.version))
    ).all()
    newest: dict[str, ContractRow] = {}
    for row in rows:
        newest[row.id] = row
    return [Contract.from_document(r.document) for r in newest.values()]
