"""Running delivery workers: inside ``broker serve``, or alone (``broker webhooks worker``).

Any number of workers may run at once, in any number of processes: they share
the outbox through leases (see :mod:`broker.store.webhooks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import timedelta
from typing import Protocol

from broker.clock import Clock
from broker.gate.gate import Gate
from broker.gate.keyring import Keyring
from broker.settings import Settings
from broker.store.database import Database
from broker.vault.vault import Vault
from broker.webhooks.egress import Egress, EgressPolicy, Lookup, system_lookup
from broker.webhooks.worker import DeliveryWorker, WorkerConfig


class WorkerParts(Protocol):
    settings: Settings
    database: Database
    gate: Gate
    clock: Clock
    vault: Vault
    keyring: Keyring


def egress_policy(settings: Settings) -> EgressPolicy:
    return EgressPolicy(
        allow_http_loopback=settings.webhook_allow_http_loopback,
        timeout_seconds=settings.webhook_timeout_seconds,
    )


def make_worker(parts: WorkerParts, egress: Egress, *, name: str | None = None) -> DeliveryWorker:
    settings = parts.settings
    return DeliveryWorker(
        database=parts.database,
        gate=parts.gate,
        clock=parts.clock,
        vault=parts.vault,
        keyring=parts.keyring,
        egress=egress,
        config=WorkerConfig(
            lease=timedelta(seconds=settings.webhook_lease_seconds),
            concurrency=settings.webhook_concurrency,
            # on stop, deliveries in flight get one request timeout to finish
            grace=timedelta(seconds=settings.webhook_timeout_seconds),
        ),
        name=name,
    )


async def run_worker(
    parts: WorkerParts, stop: asyncio.Event, *, lookup: Lookup = system_lookup
) -> None:
    """Deliver until ``stop`` is set."""
    egress = Egress(egress_policy(parts.settings), lookup)
    await egress.start()
    try:
        await make_worker(parts, egress).run(stop)
    finally:
        await egress.close()


async def run_until_signalled(parts: WorkerParts) -> None:
    """``broker webhooks worker``: deliver until SIGINT or SIGTERM, then let the
    deliveries in flight finish (see :meth:`DeliveryWorker.run`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await run_worker(parts, stop)
    finally:
        await parts.gate.close()
