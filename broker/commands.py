"""What the command line does, once it has a broker: each function one sub-command."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlmodel import Session

from broker.bootstrap import Broker
from broker.clock import format_instant
from broker.domain.contracts import classify_amendment
from broker.domain.grants import GrantState
from broker.errors import Conflict
from broker.services import holders, retention
from broker.services.retention import parse_overrides
from broker.services.seed import apply_seed, read_seed
from broker.settings import Settings
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import grants as grant_store
from broker.store import webhooks as webhook_store
from broker.store.database import Database
from broker.store.migrate import check_known, head_revision, upgrade


def db(settings: Settings, action: str) -> int:
    database = Database(settings.database_url)
    try:
        if action == "upgrade":
            print(f"{database.describe()}: at revision {upgrade(database)}")
        else:
            current = check_known(database)
            head = head_revision()
            state = "current" if current == head else f"behind (newest is {head})"
            print(f"{database.describe()}: revision {current or 'none (empty)'}: {state}")
    finally:
        database.close()
    return 0


def seed(broker: Broker, path: Path) -> dict[str, dict[str, int]]:
    seed_file = read_seed(broker.documents, path)
    now = broker.clock.now()
    report = broker.database.run_sync(
        lambda s: apply_seed(s, seed_file, broker.grants, vault=broker.vault, now=now), write=True
    )
    return report.as_dict()


def load_contracts(broker: Broker, paths: list[Path]) -> Iterator[str]:
    """Load contract versions; say for each whether it is new, unchanged or an amendment."""
    contracts = [broker.documents.load_contract(p) for p in paths]  # all valid, or none loaded
    now = broker.clock.now()

    def work(session: Session) -> list[str]:
        lines = []
        for contract in contracts:
            label = f"{contract.id} v{contract.version}"
            stored = contract_store.stored_digest(session, contract.id, contract.version)
            if stored is not None:
                if stored != contract_store.digest(dict(contract.document)):
                    raise Conflict(f"{label} is already loaded with other content")
                lines.append(f"{label}: unchanged")
                continue
            previous = contract_store.latest(session, contract.id)
            if previous is not None and previous.version > contract.version:
                raise Conflict(f"{label} is older than the loaded v{previous.version}")
            contract_store.add(session, contract, at=now)
            if previous is None:
                lines.append(f"{label}: loaded")
                continue
            amendment = classify_amendment(previous, contract)
            if amendment.widens:
                lines.append(
                    f"{label}: amendment widens scope ({'; '.join(amendment.widens)}): "
                    "existing grants keep their terms until their customers consent again"
                )
            if amendment.narrows:
                lines.append(
                    f"{label}: amendment narrows scope ({'; '.join(amendment.narrows)}): "
                    "applies to existing grants at once"
                )
            if not amendment.widens and not amendment.narrows:
                lines.append(f"{label}: loaded (no change in scope)")
        return lines

    yield from broker.database.run_sync(work, write=True)


def list_grants(broker: Broker, *, vin: str | None, customer: str | None) -> Iterator[str]:
    now = broker.clock.now()

    def work(session: Session) -> list[str]:
        if vin:
            found = grant_store.for_vehicle(session, vin)
        elif customer:
            found = grant_store.for_customer(session, customer)
        else:
            found = grant_store.in_states(session, list(GrantState))
        return [
            f"{g.id}\t{g.contract_id} v{g.contract_version}\t{g.recipient_id}\t"
            f"{g.effective_state(now).value}\t{','.join(sorted(g.categories))}"
            for g in found
        ]

    lines = broker.database.run_sync(work)
    if not lines:
        yield "no grants"
    yield from lines


def holder_change(
    broker: Broker,
    *,
    kind: str,
    vin: str,
    customer: str | None = None,
    operator: str | None = None,
    at: str | None = None,
    change_id: str | None = None,
) -> dict[str, Any]:
    """Apply one holder change as the HTTP endpoint does (same schema, same use case);
    the answer, and ``repeated`` when ``change_id`` was applied before."""
    now = broker.clock.now()
    body: dict[str, Any] = {
        "change_id": change_id or "cli-" + secrets.token_hex(8),
        "kind": kind,
        "vin": vin,
        "at": at or format_instant(now),
    }
    if customer is not None:
        body["customer"] = customer
    if operator is not None:
        body["operator"] = operator
    change = holders.HolderChange.parse(broker.documents, body)
    outcome = broker.database.run_sync(
        lambda s: holders.apply_change(
            s, change, grants=broker.grants, keyring=broker.keyring, now=now
        ),
        write=True,
    )
    return {**outcome.result, "repeated": not outcome.created}


def expire_grants(broker: Broker) -> int:
    now = broker.clock.now()
    return len(broker.database.run_sync(lambda s: broker.grants.expire_due(s, now=now), write=True))


def audit(broker: Broker, action: str) -> tuple[bool, list[str]]:
    """``verify``: check every entry and checkpoint; ``checkpoint``: sign the current tree."""
    signer = broker.audit_signer()
    if action == "checkpoint":
        now = broker.clock.now()
        checkpoint = broker.database.run_sync(
            lambda s: audit_store.write_checkpoint(s, signer, now), write=True
        )
        return True, [
            f"checkpoint of {checkpoint.size} entries, root {checkpoint.root_hex}",
            checkpoint.note().rstrip("\n"),
        ]
    result = broker.database.run_sync(lambda s: audit_store.verify(s, signer.verifier()))
    if result.ok:
        covered = result.checkpoint_size or 0
        return True, [
            f"audit log OK: {result.size} entries; {covered} covered by a signed checkpoint"
        ]
    return False, [
        f"broker: audit log verification FAILED at entry {result.first_bad_seq}: {result.problem}"
    ]


def purge(broker: Broker) -> dict[str, dict[str, object]]:
    """Erase what retention says is due; each kind purged is an audit entry."""
    now = broker.clock.now()
    overrides = parse_overrides(broker.settings.retention_overrides, broker.documents.catalogue)
    report = broker.database.run_sync(
        lambda s: retention.purge(
            s, now=now, catalogue=broker.documents.catalogue, overrides=overrides
        ),
        write=True,
    )
    return report.as_dict()


def webhooks(broker: Broker, args: argparse.Namespace) -> int:
    """``worker``: deliver until SIGTERM; ``replay``: re-queue dead letters; ``dead-letters``."""
    if args.webhooks_command == "worker":
        from broker.webhooks.runner import run_until_signalled

        asyncio.run(run_until_signalled(broker))
        return 0
    if args.webhooks_command == "replay":
        now = broker.clock.now()
        count = broker.database.run_sync(
            lambda s: webhook_store.replay(
                s, now=now, subscription_id=args.subscription, message_ids=args.message
            ),
            write=True,
        )
        print(f"queued {count} dead letter(s) again")
        return 0
    rows = broker.database.run_sync(
        lambda s: webhook_store.messages(
            s, subscription_id=args.subscription, state=webhook_store.DEAD
        )
    )
    for row in rows:
        print(
            f"{row.id}\t{row.subscription_id}\t{row.event_type}\t{row.attempts}\t{row.last_error}"
        )
    if not rows:
        print("no dead letters")
    return 0
