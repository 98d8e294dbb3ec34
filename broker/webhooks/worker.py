"""The delivery worker: claims outbox messages, asks the gate, signs, sends, records.

At least once: a message is claimed for a lease, sent, and only then marked
delivered; a worker that dies mid-way leaves its claims to expire and another
worker sends them again under the same ``webhook-id``. Several workers (threads,
processes, machines) share one outbox safely (see :func:`broker.store.webhooks.claim`).

The gate decides at send time: a ``data.<category>`` message is a reference, and
the payload sent is what :meth:`broker.gate.gate.Gate.release` releases for it
now (sealed, checked with :func:`verify_release`); a grant or fleet event
carries what :meth:`~broker.gate.gate.Gate.announce` lets it name now (checked
with :func:`~broker.gate.announce.verify_announcement`). If the grant ended while
the message waited, the gate denies (and audits the denial) and the message is
dropped unsent. A failed attempt is retried on :mod:`broker.webhooks.schedule`;
``410 Gone`` ends the subscription; an endpoint failing through the whole
schedule, or for ``disable_after``, is disabled and its recipient told by an
audited notice. Messages left over are dead letters, replayable
(``broker webhooks replay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker import __version__
from broker.audit.entry import AuditEntry
from broker.clock import Clock, SystemClock, format_instant
from broker.domain.contracts import Channel, Contract
from broker.errors import BrokerError
from broker.gate.announce import EventRequest, verify_announcement
from broker.gate.gate import Gate
from broker.gate.group_commit import GroupCommitter
from broker.gate.keyring import Keyring
from broker.gate.release import Denial, ReleaseRequest, VehicleTarget, verify_release
from broker.protection.transforms import coarse_instant
from broker.store import audit as audit_store
from broker.store import contracts as contract_store
from broker.store import webhooks as webhook_store
from broker.store.database import Database
from broker.store.tables import WebhookMessageRow, WebhookSubscriptionRow
from broker.vault.vault import Vault
from broker.webhooks import events, signing
from broker.webhooks.egress import Egress, Response
from broker.webhooks.schedule import next_delay
from broker.webhooks.secrets import SecretBox

log = logging.getLogger(__name__)

WEBHOOK_DISABLED = "webhook_disabled"


@dataclass(frozen=True)
class WorkerConfig:
    lease: timedelta = timedelta(seconds=60)
    concurrency: int = 16
    poll_seconds: float = 0.5
    disable_after: timedelta = timedelta(days=5)
    #: On stop, how long deliveries in flight may take to finish before they are cancelled.
    grace: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class _Drop:
    reason: str
    audit_seq: int | None = None


@dataclass(frozen=True)
class Claimed:
    """A claimed message and what sending it needs, read in the claiming transaction
    (so that a delivery reads nothing more before it asks the gate)."""

    message: WebhookMessageRow
    sub: WebhookSubscriptionRow | None  # None: deleted since
    keys: list[str]  # the secrets that sign now
    #: Why the subscription's secrets could not be read: that delivery fails (and is left
    #: to its lease) like any other, and the rest of the batch goes on.
    problem: Exception | None
    contract: Contract | None  # a data message's contract, the latest version


def worker_name() -> str:
    return f"{socket.gethostname()[:30]}-{os.getpid()}-{secrets.token_hex(3)}"


class DeliveryWorker:
    def __init__(
        self,
        *,
        database: Database,
        gate: Gate,
        clock: Clock,
        vault: Vault,
        keyring: Keyring,
        egress: Egress,
        config: WorkerConfig | None = None,
        name: str | None = None,
        signing_clock: Clock | None = None,
    ) -> None:
        self.database = database
        self.gate = gate
        self.clock = clock
        self.keyring = keyring
        self.secrets = SecretBox(vault)
        self.egress = egress
        self.config = config or WorkerConfig()
        self.name = name or worker_name()
        # The signature's timestamp is checked by the receiver against its own wall clock.
        self.signing_clock = signing_clock or SystemClock()
        # Outcomes of concurrent deliveries share one commit (each in its own savepoint).
        self.outcomes = GroupCommitter(database)

    # -- running ----------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim one batch of due messages and deliver them (concurrently); how many."""
        try:
            claimed = await self._claim(self.config.concurrency)
            await asyncio.gather(*(self.deliver(c) for c in claimed))
        finally:
            await self.outcomes.close()
        return len(claimed)

    async def drain(self, *, rounds: int = 1000) -> int:
        """Deliver until nothing is due (now, by this worker's clock); how many were handled."""
        total = 0
        for _ in range(rounds):
            handled = await self.run_once()
            if not handled:
                break
            total += handled
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, up to ``concurrency`` messages in flight.

        A slow endpoint holds one slot until its timeout; the other slots go on.
        Once ``stop`` is set nothing more is claimed, and the deliveries in flight
        have ``grace`` to finish; any still running then are cancelled and left to
        their lease (another worker sends them again, under the same ``webhook-id``).
        """
        inflight: set[asyncio.Task[None]] = set()
        log.info("webhook worker started", extra={"worker": self.name})
        try:
            while not stop.is_set():
                free = self.config.concurrency - len(inflight)
                claimed: list[Claimed] = []
                if free > 0:
                    try:
                        claimed = await self._claim(free)
                    except Exception:
                        log.exception("claiming webhook messages failed; retrying")
                for one in claimed:
                    inflight.add(asyncio.create_task(self.deliver(one)))
                if claimed and len(inflight) < self.config.concurrency:
                    continue
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait(
                    {*inflight, stopping},
                    timeout=self.config.poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                stopping.cancel()
                inflight -= done
            log.info(
                "webhook worker stopping", extra={"worker": self.name, "in_flight": len(inflight)}
            )
            if inflight:
                _, inflight = await asyncio.wait(
                    inflight, timeout=self.config.grace.total_seconds()
                )
        finally:
            for task in inflight:
                task.cancel()
            for task in inflight:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            # An outcome not yet committed is left to its lease, like its delivery.
            await self.outcomes.close()
        log.info("webhook worker stopped", extra={"worker": self.name, "cancelled": len(inflight)})

    async def _claim(self, limit: int) -> list[Claimed]:
        now = self.clock.now()
        return await self.database.write(lambda s: self._claimed(s, now, limit))

    def _claimed(self, session: Session, now: datetime, limit: int) -> list[Claimed]:
        messages = webhook_store.claim(
            session, worker=self.name, now=now, lease=self.config.lease, limit=limit
        )
        subs = {i: self._signing(session, i, now) for i in {m.subscription_id for m in messages}}
        wanted = {
            m.contract_id
            for m in messages
            if m.contract_id and m.event_type.startswith(events.DATA_PREFIX)
        }
        contracts = {i: contract_store.latest(session, i) for i in wanted}
        return [
            Claimed(m, *subs[m.subscription_id], contract=contracts.get(m.contract_id or ""))
            for m in messages
        ]

    def _signing(
        self, session: Session, subscription_id: str, now: datetime
    ) -> tuple[WebhookSubscriptionRow | None, list[str], Exception | None]:
        sub = webhook_store.subscription(session, subscription_id)
        if sub is None:
            return None, [], None
        try:
            return sub, self.secrets.signing(session, sub, now), None
        except (LookupError, BrokerError) as exc:
            return sub, [], exc

    # -- one message ------------------------------------------------------------------------

    async def deliver(self, claimed: Claimed) -> None:
        """Send one claimed message and record what happened (errors leave it to its lease)."""
        try:
            await self._deliver(claimed)
        except Exception:
            log.exception("webhook delivery failed", extra={"webhook_id": claimed.message.id})

    async def _deliver(self, claimed: Claimed) -> None:
        message, sub = claimed.message, claimed.sub
        if sub is None:
            await self._finish(message, state=webhook_store.DROPPED, last_error="deleted")
            return
        if claimed.problem is not None:
            raise claimed.problem
        built = await self._body(message, sub, claimed.contract)
        if isinstance(built, _Drop):
            log.info("webhook message dropped", extra={"webhook_id": message.id})
            await self._finish(
                message,
                state=webhook_store.DROPPED,
                last_error=built.reason[:300],
                audit_seq=built.audit_seq,
            )
            return
        body, audit_seq = built
        timestamp = int(self.signing_clock.now().timestamp())
        headers = signing.headers(claimed.keys, message.id, timestamp, body) | {
            "Content-Type": "application/json",
            "User-Agent": f"vehicle-data-broker-webhooks/{__version__}",
        }
        response = await self.egress.post(sub.url, body, headers)
        await self.outcomes.submit(lambda s: self._record(s, message, response, audit_seq))

    async def _finish(self, message: WebhookMessageRow, **values: Any) -> None:
        now = self.clock.now()
        await self.outcomes.submit(
            lambda s: webhook_store.finish(s, message.seq or 0, worker=self.name, now=now, **values)
        )

    async def _body(
        self, message: WebhookMessageRow, sub: WebhookSubscriptionRow, contract: Contract | None
    ) -> tuple[bytes, int | None] | _Drop:
        data: dict[str, Any]
        audit_seq: int | None = None
        if message.event_type.startswith(events.DATA_PREFIX):
            released = await self._release(message, contract)
            if isinstance(released, _Drop):
                return released
            data, audit_seq = released
        elif message.event_type == events.PING:
            data = {"subscription": sub.id}
        else:
            announced = await self._announce(message)
            if isinstance(announced, _Drop):
                return announced
            data, audit_seq = announced
        document = {
            "type": message.event_type,
            "timestamp": format_instant(  # when the change happened, at the data's precision
                coarse_instant(message.created_at, contract.time_precision if contract else None)
            ),
            "data": data,
        }
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return body, audit_seq

    async def _release(
        self, message: WebhookMessageRow, contract: Contract | None
    ) -> tuple[dict[str, Any], int] | _Drop:
        """What the gate releases now for a data message, and its audit entry.

        The event's range is the broker's own (the new records' times), so the gate
        reads it exactly; ``since``/``until`` go out as the gate shows them, at the
        contract's time precision, like the records' ``recorded_at`` and the
        document's ``timestamp``. The Standard Webhooks ``webhook-timestamp`` header
        is not a data time: it is the signing time, which must stay exact for the
        receiver to verify the signature against its own clock (and tells nothing
        about when anything was recorded).
        """
        contract_id = message.contract_id or ""
        if contract is None or not (message.vin and message.category and message.since):
            return _Drop("no such contract or reference")
        request = ReleaseRequest(
            recipient_id=message.recipient_id,
            contract_id=contract_id,
            channel=Channel.WEBHOOK,
            purpose=contract.purpose.code,
            target=VehicleTarget(message.vin),
            categories=frozenset({message.category}),
            since=message.since,
            until=message.until or message.since,
            exact_range=True,
        )
        outcome = await self.gate.release(request)
        if isinstance(outcome, Denial):
            return _Drop("the gate denied: " + ", ".join(outcome.codes), outcome.audit_seq)
        release = verify_release(outcome)
        data = {
            "contract": contract_id,
            "category": message.category,
            "since": format_instant(release.since or message.since),
            "until": format_instant(release.until or request.until),
            "decision": release.decision,
            "grants": list(release.grant_ids),
            "vehicles": list(release.vehicle_refs),
            "protection": release.payload.level.value,
            "records": list(release.payload.records),
            "withheld": [
                {"code": w.reason.code, "reason": w.reason.text(), "vehicle": w.vehicle_ref}
                for w in release.withheld
            ],
            "audit_seq": release.audit_seq,
        }
        return data, release.audit_seq

    async def _announce(self, message: WebhookMessageRow) -> tuple[dict[str, Any], int] | _Drop:
        """A grant or fleet event: what the gate lets it name now (see
        :mod:`broker.gate.announce`), sent with its audit entry's number."""
        outcome = await self.gate.announce(
            EventRequest(
                recipient_id=message.recipient_id,
                event=message.event_type,
                vin=message.vin,
                grant_id=message.grant_id,
                contract_id=message.contract_id,
            )
        )
        if isinstance(outcome, Denial):
            return _Drop("the gate denied: " + ", ".join(outcome.codes), outcome.audit_seq)
        announced = verify_announcement(outcome)
        return announced.data | {"audit_seq": announced.audit_seq}, announced.audit_seq

    # -- the outcome ------------------------------------------------------------------------

    def _record(
        self,
        session: Session,
        message: WebhookMessageRow,
        response: Response,
        audit_seq: int | None,
    ) -> None:
        now = self.clock.now()
        seq = message.seq or 0
        status = response.status
        sub = webhook_store.subscription(session, message.subscription_id)
        if status is not None and 200 <= status < 300:
            webhook_store.finish(
                session, seq, worker=self.name, now=now,
                state=webhook_store.DELIVERED, last_status=status, last_error="",
                audit_seq=audit_seq,
            )  # fmt: skip
            if sub is not None and sub.failing_since is not None:
                sub.failing_since = None
                webhook_store.save_subscription(session, sub)
            return
        error = response.error or f"answered {status}"
        if status == 410:
            held = webhook_store.finish(
                session, seq, worker=self.name, now=now,
                state=webhook_store.DEAD, last_status=status, last_error=error,
            )  # fmt: skip
            if held and sub is not None:
                self._disable(session, sub, "the endpoint answered 410 Gone", now)
            return
        delay = next_delay(message.attempts, retry_after=response.retry_after)
        failing_since = (sub.failing_since if sub else None) or now
        sustained = now - failing_since >= self.config.disable_after
        if delay is None or sustained:
            held = webhook_store.finish(
                session, seq, worker=self.name, now=now,
                state=webhook_store.DEAD, last_status=status, last_error=error,
            )  # fmt: skip
            if held and sub is not None and (sustained or failing_since <= message.created_at):
                self._disable(session, sub, "the endpoint failed through the retry schedule", now)
            return
        held = webhook_store.finish(
            session, seq, worker=self.name, now=now,
            state=webhook_store.PENDING, last_status=status, last_error=error,
            next_attempt_at=now + delay,
        )  # fmt: skip
        if held and sub is not None and sub.failing_since is None:
            sub.failing_since = now
            webhook_store.save_subscription(session, sub)

    def _disable(
        self, session: Session, sub: WebhookSubscriptionRow, reason: str, now: datetime
    ) -> None:
        """Disable the subscription, dead-letter its open messages, and tell the recipient."""
        audit_store.serialise(session)
        sub.status = webhook_store.DISABLED
        sub.status_reason = reason
        sub.updated_at = now
        webhook_store.save_subscription(session, sub)
        webhook_store.close_open(
            session, sub.id, state=webhook_store.DEAD, reason=f"subscription disabled: {reason}",
            now=now,
        )  # fmt: skip
        audit_store.append(
            session,
            [
                AuditEntry(
                    at=now,
                    kind="notice",
                    recipient_id=sub.recipient_id,
                    channel=Channel.WEBHOOK.value,
                    decision="released",
                    reasons=(reason,),
                    subject_ref=sub.id,
                    details={"notice": WEBHOOK_DISABLED},
                )
            ],
        )
        log.warning("webhook subscription disabled", extra={"subscription": sub.id})
