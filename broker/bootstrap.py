"""The composition root: the one place that builds and wires the broker's parts.

No I/O at import time. :func:`open_broker` opens the database (migrating it when
``BROKER_AUTO_MIGRATE`` is on, the default), loads the documents and keys, and
wires the gate with its revocation listeners; :func:`create_web_app` does the
same inside the web application's lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from broker import __version__
from broker.audit.checkpoint import CheckpointSigner
from broker.clock import Clock, SystemClock
from broker.documents import DocumentLibrary
from broker.errors import DatabaseError
from broker.gate.gate import Gate
from broker.gate.keyring import Keyring
from broker.gate.notices import issue_notice
from broker.gate.revocation import RevocationListeners
from broker.http import api as api_routes
from broker.http import holders as holder_routes
from broker.http import ingest as ingest_routes
from broker.http import me as me_routes
from broker.http import oauth as oauth_routes
from broker.http import pull as pull_routes
from broker.http import webhooks as webhook_routes
from broker.http.app import create_app
from broker.http.openapi import add_document_route
from broker.ingest.service import IngestService
from broker.oauth.dpop import DpopPolicy, derive_nonce_key
from broker.oauth.keys import SigningKeys
from broker.oauth.revocation import revoke_grant_tokens
from broker.oauth.scopes import supported_scopes
from broker.oauth.server import BrokerAuthorizationServer
from broker.protection.keys import generate_master_key, load_master_key
from broker.services.customer_app import CustomerApp
from broker.services.grants import GrantService
from broker.settings import Settings
from broker.store.database import Database
from broker.store.migrate import check_known, head_revision, upgrade
from broker.transfer.adequacy import AdequacyTable
from broker.vault.vault import Vault
from broker.web.consent import add_consent_routes
from broker.web.customer_app import add_customer_app_routes
from broker.web.routes import add_web_routes
from broker.webhooks.events import on_grant_ended
from broker.webhooks.grants import AnnouncingGrantService
from broker.webhooks.runner import egress_policy, run_worker
from broker.webhooks.subscriptions import WebhookSubscriptions
from connectors.mqtt_ingest import MqttSettings, start_mqtt_ingest

log = logging.getLogger(__name__)


@dataclass
class Broker:
    """Every long-lived part of a running broker."""

    settings: Settings
    clock: Clock
    database: Database
    documents: DocumentLibrary
    adequacy: AdequacyTable
    keyring: Keyring
    listeners: RevocationListeners
    grants: GrantService
    gate: Gate
    audit_key_file: Path
    vault: Vault
    ingest: IngestService
    oauth: BrokerAuthorizationServer
    customer_app: CustomerApp
    webhooks: WebhookSubscriptions

    def audit_signer(self) -> CheckpointSigner:
        return CheckpointSigner.from_file(self.audit_key_file)

    def close(self) -> None:
        self.database.close()


def master_key(settings: Settings) -> bytes:
    """The master key from the environment or its key file (created on first start)."""
    if settings.master_key:
        return load_master_key(settings.master_key, None)
    path = settings.master_key_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(generate_master_key() + "\n")
        log.warning("created a new master key file", extra={"path": str(path)})
    return load_master_key(None, path)


def audit_key(settings: Settings) -> Path:
    """The audit checkpoint signing key file (created on first start)."""
    path = settings.audit_key_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        CheckpointSigner.generate(path)
        log.warning("created a new audit signing key", extra={"path": str(path)})
    return path


def open_broker(settings: Settings, *, clock: Clock | None = None) -> Broker:
    clock = clock or SystemClock()
    documents = DocumentLibrary(settings.contracts_dir)
    adequacy = AdequacyTable.load(settings.contracts_dir / "adequacy.json")
    key = master_key(settings)
    keyring = Keyring(key)
    vault = Vault(key, clock)
    audit_key_file = audit_key(settings)
    database = Database(settings.database_url)
    try:
        if settings.auto_migrate:
            upgrade(database)
        elif check_known(database) != head_revision():
            raise DatabaseError(
                f"the database at {database.describe()} is not at the current schema; "
                "run `broker db upgrade` (or set BROKER_AUTO_MIGRATE=1)"
            )
    except BaseException:
        database.close()
        raise
    listeners = RevocationListeners()
    listeners.register(
        "notice", lambda session, ended: issue_notice(session, ended, keyring, adequacy)
    )
    listeners.register("oauth-tokens", revoke_grant_tokens)
    listeners.register("webhooks", on_grant_ended)
    oauth = BrokerAuthorizationServer(
        database=database,
        clock=clock,
        keys=SigningKeys.load(settings.oauth_keys_dir),
        keyring=keyring,
        issuer=settings.issuer,
        scopes_supported=supported_scopes(documents),
        dpop=DpopPolicy(nonce_key=derive_nonce_key(key), nonce_required=settings.dpop_nonce),
    )
    gate = Gate(
        database=database,
        clock=clock,
        adequacy=adequacy,
        keyring=keyring,
        vault=vault,
        free_text=documents.catalogue.free_text_targets,
    )
    ingest = IngestService(database=database, documents=documents, clock=clock, vault=vault)
    grants = AnnouncingGrantService(listeners)  # a GrantService announcing to webhooks
    customer_app = CustomerApp(
        grants=grants, documents=documents, adequacy=adequacy, vault=vault, keyring=keyring
    )
    return Broker(
        settings=settings,
        clock=clock,
        database=database,
        documents=documents,
        adequacy=adequacy,
        keyring=keyring,
        listeners=listeners,
        grants=grants,
        gate=gate,
        audit_key_file=audit_key_file,
        vault=vault,
        ingest=ingest,
        oauth=oauth,
        customer_app=customer_app,
        webhooks=WebhookSubscriptions(
            database=database,
            documents=documents,
            vault=vault,
            clock=clock,
            policy=egress_policy(settings),
        ),
    )


@dataclass
class Runtime:
    """Holds the broker while the web application runs (set at start-up)."""

    broker: Broker | None = field(default=None)

    def require(self) -> Broker:
        if self.broker is None:
            raise DatabaseError("the broker is starting")
        return self.broker


RUNTIME = web.AppKey("runtime", Runtime)


def create_web_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    runtime = Runtime()

    async def readiness() -> None:
        await runtime.require().database.ping()

    app = create_app(settings=settings, readiness=readiness, version=__version__)
    app[RUNTIME] = runtime

    ingest_routes.add_routes(
        app,
        service=lambda: runtime.require().ingest,
        oauth=lambda: runtime.require().oauth,
        max_bytes=settings.max_ingest_bytes,
    )
    holder_routes.add_routes(app, runtime=lambda: runtime.require())
    oauth_routes.add_routes(app, server=lambda: runtime.require().oauth)
    api_routes.add_routes(app, runtime=lambda: runtime.require())
    pull_routes.add_routes(app, runtime=lambda: runtime.require())
    me_routes.add_routes(app, runtime=lambda: runtime.require())
    webhook_routes.add_routes(app, runtime=lambda: runtime.require())
    # One CSRF key for every process of this broker: derived from the master key.
    csrf_key = hmac.new(master_key(settings), b"vehicle-data-broker/csrf/v1", "sha256").digest()
    add_web_routes(app, runtime_getter=lambda: runtime.require(), csrf_key=csrf_key)
    add_consent_routes(app, runtime=lambda: runtime.require())
    add_customer_app_routes(app, runtime=lambda: runtime.require())
    add_document_route(app, schemas=lambda: _schemas(runtime.require().documents))

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        runtime.broker = await asyncio.to_thread(open_broker, settings, clock=clock)
        try:
            yield
        finally:
            broker, runtime.broker = runtime.broker, None
            await broker.gate.close()
            await asyncio.to_thread(broker.close)

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(_periodic_purge(runtime))
    app.cleanup_ctx.append(_mqtt_ingest(runtime, settings))
    if settings.webhook_worker:
        app.cleanup_ctx.append(_webhook_worker(runtime))
    return app


def _schemas(documents: DocumentLibrary) -> dict[str, Mapping[str, Any]]:
    return {schema_id: documents.schemas.schema(schema_id) for schema_id in documents.schemas.ids}


def _mqtt_ingest(
    runtime: Runtime, settings: Settings
) -> Callable[[web.Application], AsyncIterator[None]]:
    """MQTT streaming ingest while serving, when ``BROKER_MQTT_URL`` is set."""
    mqtt = MqttSettings.from_env(
        {
            "BROKER_MQTT_URL": settings.mqtt_url,
            "BROKER_MQTT_TOPIC_PREFIX": settings.mqtt_topic_prefix,
            "BROKER_MQTT_CLIENT_ID": settings.mqtt_client_id,
        }
        if settings.mqtt_url
        else {}
    )

    async def context(_app: web.Application) -> AsyncIterator[None]:
        running = start_mqtt_ingest(runtime.require().ingest, mqtt) if mqtt else None
        try:
            yield
        finally:
            if running is not None:
                await running.close()

    return context


def _periodic_purge(
    runtime: Runtime,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Housekeeping (retention purge, session clean-up, audit checkpoint) every
    ``BROKER_PURGE_INTERVAL`` seconds while serving."""

    async def loop() -> None:
        from broker.maintenance import housekeeping  # it imports this module: import late

        while True:
            broker = runtime.require()
            await asyncio.sleep(broker.settings.purge_interval_seconds)
            try:
                done = await asyncio.to_thread(housekeeping, broker)
                log.info("housekeeping", extra={"done": done})
            except Exception:
                log.exception("housekeeping failed; retrying at the next interval")

    async def context(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop(), name="housekeeping")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context


def _webhook_worker(runtime: Runtime) -> Callable[[web.Application], AsyncIterator[None]]:
    """A webhook delivery worker while serving (``BROKER_WEBHOOK_WORKER=0`` turns it off)."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(runtime.require(), stop), name="webhooks")
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context
