"""Webhook subscriptions of a recipient: create, read, change, delete, rotate the secret.

Every request body is checked against its JSON Schema (``contracts/schemas/
webhook-*.schema.json``) before anything is stored; the endpoint URL is vetted
(:func:`broker.webhooks.egress.vet_url`) up front. Only a recipient whose
contract in force allows the ``webhook`` channel may subscribe. A recipient
sees only its own subscriptions: anyone else's id is simply not found.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker.clock import Clock, format_instant
from broker.documents import DocumentLibrary
from broker.documents.schemas import DocumentError, json_path
from broker.domain.contracts import Channel
from broker.errors import BrokerError, InvalidDocument, NotFound
from broker.store import contracts as contract_store
from broker.store import webhooks as webhook_store
from broker.store.database import Database
from broker.store.tables import WebhookSubscriptionRow
from broker.vault.vault import Vault
from broker.webhooks import events, signing
from broker.webhooks.egress import EgressPolicy, Lookup, system_lookup, vet_url
from broker.webhooks.secrets import SecretBox

CREATE_SCHEMA = "urn:vehicle-data-broker:schema:webhook-subscription-create"
UPDATE_SCHEMA = "urn:vehicle-data-broker:schema:webhook-subscription-update"
ROTATE_SCHEMA = "urn:vehicle-data-broker:schema:webhook-secret-rotation"
DEFAULT_OVERLAP = timedelta(hours=24)


class WebhookChannelNotAllowed(BrokerError):
    code = "webhook_channel_not_allowed"
    status = 403
    title = "No contract allows webhooks"


class WebhookSubscriptions:
    def __init__(
        self,
        *,
        database: Database,
        documents: DocumentLibrary,
        vault: Vault,
        clock: Clock,
        policy: EgressPolicy,
        lookup: Lookup = system_lookup,
    ) -> None:
        self.database = database
        self.documents = documents
        self.box = SecretBox(vault)
        self.clock = clock
        self.policy = policy
        self.lookup = lookup
        self.known_events = frozenset(events.event_types(documents.catalogue.ids))

    def _check(self, schema_id: str, body: Any) -> dict[str, Any]:
        errors = self.documents.schemas.errors(schema_id, body)
        if not errors and isinstance(body, dict):
            errors = [
                DocumentError(json_path(["event_types", i]), "is not a known event type")
                for i, name in enumerate(body.get("event_types") or [])
                if name not in self.known_events
            ]
        if errors:
            raise InvalidDocument(
                "the request body is not valid; nothing was stored",
                [e.as_dict() for e in errors],
            )
        assert isinstance(body, dict)
        return body

    async def create(self, recipient_id: str, body: Any) -> dict[str, Any]:
        """A new subscription, its secret (shown this once), and a verification ping queued."""
        doc = self._check(CREATE_SCHEMA, body)
        now = self.clock.now()
        await self.database.read(lambda s: self._require_webhook_contract(s, recipient_id, now))
        await vet_url(doc["url"], self.policy, self.lookup)
        secret = signing.new_secret()

        def work(session: Session) -> WebhookSubscriptionRow:
            self._require_webhook_contract(session, recipient_id, now)
            sub_id = webhook_store.new_subscription_id()
            row = WebhookSubscriptionRow(
                id=sub_id,
                recipient_id=recipient_id,
                url=doc["url"],
                description=doc.get("description", ""),
                event_types=sorted(doc["event_types"]),
                status=webhook_store.ACTIVE,
                secrets=self.box.seal(session, sub_id, secret),
                created_at=now,
                updated_at=now,
            )
            webhook_store.add_subscription(session, row)
            events.queue_ping(session, sub_id, recipient_id, now=now)
            return row

        row = await self.database.write(work)
        return describe(row) | {"secret": secret}

    @staticmethod
    def _require_webhook_contract(session: Session, recipient_id: str, now: datetime) -> None:
        for contract_id in webhook_store.contract_ids(session, recipient_id):
            contract = contract_store.latest(session, contract_id)
            if (
                contract is not None
                and contract.is_valid_at(now)
                and Channel.WEBHOOK in contract.channels
            ):
                return
        raise WebhookChannelNotAllowed("no contract in force allows the webhook channel")

    async def listing(self, recipient_id: str) -> list[dict[str, Any]]:
        rows = await self.database.read(lambda s: webhook_store.subscriptions(s, recipient_id))
        return [describe(r) for r in rows]

    async def get(self, recipient_id: str, subscription_id: str) -> dict[str, Any]:
        row = await self.database.read(lambda s: _mine(s, recipient_id, subscription_id))
        return describe(row)

    async def update(self, recipient_id: str, subscription_id: str, body: Any) -> dict[str, Any]:
        doc = self._check(UPDATE_SCHEMA, body)
        if "url" in doc:
            await vet_url(doc["url"], self.policy, self.lookup)
        now = self.clock.now()

        def work(session: Session) -> WebhookSubscriptionRow:
            row = _mine(session, recipient_id, subscription_id)
            if "url" in doc:
                row.url = doc["url"]
            if "event_types" in doc:
                row.event_types = sorted(doc["event_types"])
            if "description" in doc:
                row.description = doc["description"]
            if "status" in doc and doc["status"] != row.status:
                if doc["status"] == webhook_store.ACTIVE:
                    self._require_webhook_contract(session, recipient_id, now)
                    row.failing_since = None
                row.status = doc["status"]
                row.status_reason = "changed by the recipient"
            row.updated_at = now
            webhook_store.save_subscription(session, row)
            return row

        return describe(await self.database.write(work))

    async def delete(self, recipient_id: str, subscription_id: str) -> None:
        """The subscription ends for good; its queued messages are dropped (history kept)."""
        now = self.clock.now()

        def work(session: Session) -> None:
            row = _mine(session, recipient_id, subscription_id)
            row.status = webhook_store.DELETED
            row.status_reason = "deleted by the recipient"
            row.updated_at = now
            webhook_store.save_subscription(session, row)
            webhook_store.close_open(
                session, row.id, state=webhook_store.DROPPED, reason="deleted", now=now
            )

        await self.database.write(work)

    async def rotate(self, recipient_id: str, subscription_id: str, body: Any) -> dict[str, Any]:
        """A new secret; the previous one keeps signing too for the overlap (default 24 h)."""
        doc = self._check(ROTATE_SCHEMA, {} if body is None else body)
        overlap = timedelta(seconds=doc.get("overlap_seconds", DEFAULT_OVERLAP.total_seconds()))
        now = self.clock.now()
        secret = signing.new_secret()

        def work(session: Session) -> WebhookSubscriptionRow:
            row = _mine(session, recipient_id, subscription_id)
            previous = self.box.current(session, row)
            row.secrets = self.box.seal(session, row.id, secret, previous)
            row.previous_until = now + overlap
            row.updated_at = now
            webhook_store.save_subscription(session, row)
            return row

        row = await self.database.write(work)
        return describe(row) | {"secret": secret}


def _mine(session: Session, recipient_id: str, subscription_id: str) -> WebhookSubscriptionRow:
    row = webhook_store.subscription(session, subscription_id, recipient_id=recipient_id)
    if row is None:
        raise NotFound("no such webhook subscription")
    return row


def describe(row: WebhookSubscriptionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "event_types": list(row.event_types),
        "status": row.status,
        "status_reason": row.status_reason or None,
        "previous_secret_valid_until": (
            format_instant(row.previous_until) if row.previous_until else None
        ),
        "created_at": format_instant(row.created_at),
        "updated_at": format_instant(row.updated_at),
    }
