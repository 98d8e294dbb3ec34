"""Real ``broker webhooks worker`` processes sharing one PostgreSQL outbox.

Several workers drain a shared outbox with every message sent once; a worker
killed with SIGKILL mid-delivery loses nothing (its claims expire and another
worker sends them again under the same ``webhook-id``: at least once).
The receiver runs in the test process on 127.0.0.1 and verifies every delivery
with the ``standardwebhooks`` reference library.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import standardwebhooks
from aiohttp import web
from ingest_app import App
from processes import env_of
from webhooks.support import status_record, subscribe
from worlds import CLUBMAN, ROOT

from broker.store import audit as audit_store
from broker.store import webhooks as store
from broker.store.tables import WebhookMessageRow

#: Safety nets only (nothing asserts on how long anything took).
DRAIN_TIMEOUT = 240.0
START_TIMEOUT = 60.0
#: Without a kill nothing needs re-claiming: a long lease, so that a slow machine causes no
#: (legitimate, at-least-once) second claim. After a SIGKILL: short, to re-claim soon.
LONG_LEASE = 60
SHORT_LEASE = 5
CONCURRENCY = 8


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """These tests share an outbox between processes: PostgreSQL only (SKIP LOCKED)."""
    return str(request.param)


# -- the receiver -----------------------------------------------------------------------------


@dataclass
class Delivery:
    webhook_id: str
    payload: dict[str, Any]


@dataclass
class Recorder:
    """Verifies and records every request; answers 200."""

    secret: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    on_request: Callable[[int], None] | None = None  # called with the request's number
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            payload = standardwebhooks.Webhook(self.secret).verify(body, headers)
        except standardwebhooks.WebhookVerificationError as exc:
            self.bad.append(f"{headers.get('webhook-id')}: {exc}")
            return web.Response(status=200)
        self.deliveries.append(Delivery(headers["webhook-id"], payload))
        if self.on_request is not None:
            self.on_request(len(self.deliveries))
        await asyncio.sleep(random.random() / 200)  # interleave the workers a little
        return web.Response(status=200)

    def ids(self) -> list[str]:
        return [d.webhook_id for d in self.deliveries]


@pytest.fixture
async def recorder(aiohttp_server: Any) -> Recorder:
    me = Recorder()
    server_app = web.Application()
    server_app.router.add_post("/hook", me.handle)
    server = await aiohttp_server(server_app, host="127.0.0.1")
    me.url = str(server.make_url("/hook"))
    return me


# -- worker processes -------------------------------------------------------------------------


@dataclass
class Workers:
    """``broker webhooks worker`` processes on the app's database and keys."""

    app: App
    tmp_path: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def env(self, name: str, lease: int) -> dict[str, str]:
        settings = self.app.broker.settings
        url = sa.make_url(settings.database_url).update_query_dict({"application_name": name})
        # the master key that sealed the subscription secrets, and the app's other keys
        return env_of(
            settings,
            BROKER_DATABASE_URL=url.render_as_string(hide_password=False),
            BROKER_WEBHOOK_ALLOW_HTTP_LOOPBACK="1",
            BROKER_WEBHOOK_LEASE_SECONDS=str(lease),
            BROKER_WEBHOOK_CONCURRENCY=str(CONCURRENCY),
            BROKER_WEBHOOK_TIMEOUT="10",
        )

    def start(self, name: str, *, lease: int) -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "broker", "webhooks", "worker"],
                cwd=ROOT, env=self.env(name, lease), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append(process)
        self.logs.append(log_path)
        return process

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in self.logs)

    async def connected(self, names: list[str]) -> None:
        """Wait until every named worker has connected to the database (it then polls)."""
        url = self.app.broker.settings.database_url

        def present() -> set[str]:
            with psycopg.connect(url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT DISTINCT application_name FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                ).fetchall()
            return {str(r[0]) for r in rows}

        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not set(names) <= await asyncio.to_thread(present):
            self.check_alive()
            assert loop.time() < deadline, f"workers never connected\n{self.output()}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # from connecting (migrations checked) to polling

    def assert_quiet(self) -> None:
        """No worker logged a failed delivery or claim, nor any traceback."""
        output = self.output()
        assert "failed" not in output and "Traceback" not in output, output

    def check_alive(self) -> None:
        for process in self.processes:
            code = process.poll()
            assert code is None or code == -signal.SIGKILL, (
                f"worker {process.pid} exited with {code}\n{self.output()}"
            )

    async def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 30)


@pytest.fixture
async def workers(app: App, tmp_path: Path) -> AsyncIterator[Workers]:
    started = Workers(app, tmp_path)
    try:
        yield started
    finally:
        await started.stop()  # always: a test failing half-way leaves no process behind


# -- helpers ----------------------------------------------------------------------------------


async def set_status(app: App, subscription_id: str, status: str) -> None:
    def change(session: Any) -> None:
        sub = store.subscription(session, subscription_id)
        assert sub is not None
        sub.status = status
        store.save_subscription(session, sub)

    await app.broker.database.write(change)


async def outbox(app: App, subscription_id: str) -> list[WebhookMessageRow]:
    def read(session: Any) -> list[WebhookMessageRow]:
        return store.messages(session, subscription_id=subscription_id)

    return await app.broker.database.read(read)


async def open_count(app: App, subscription_id: str) -> int:
    message = WebhookMessageRow.__table__  # type: ignore[attr-defined]
    query = sa.select(sa.func.count()).where(
        message.c.subscription_id == subscription_id, message.c.state.in_(store.OPEN)
    )
    return int(await app.broker.database.read(lambda s: s.execute(query).scalar_one()))


async def recipient_of(app: App, subscription_id: str) -> str:
    sub = await app.broker.database.read(lambda s: store.subscription(s, subscription_id))
    assert sub is not None
    return sub.recipient_id


async def wait_drained(app: App, subscription_id: str, workers: Workers) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_TIMEOUT
    while await open_count(app, subscription_id):
        workers.check_alive()
        assert loop.time() < deadline, f"the outbox never drained\n{workers.output()}"
        await asyncio.sleep(0.2)


def claimants(rows: list[tuple[str, str]]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for message_id, worker in rows:
        seen[message_id].add(worker)
    return seen


def worker_pid(name: str) -> int:
    """The pid in a worker's name (``host-pid-random``, see ``worker_name``)."""
    return int(name.rsplit("-", 2)[1])


def assert_in_order(rows: list[WebhookMessageRow], received: list[str]) -> None:
    """Per ordering key, the first arrival of each message follows the outbox order."""
    key = {r.id: r.order_key for r in rows}
    first: dict[str, list[str]] = defaultdict(list)
    for message_id in dict.fromkeys(received):
        first[key[message_id]].append(message_id)
    expected: dict[str, list[str]] = defaultdict(list)
    for row in rows:  # in seq order
        expected[row.order_key].append(row.id)
    assert first == expected


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_three_worker_processes_drain_a_shared_outbox(
    app: App, recorder: Recorder, workers: Workers
) -> None:
    sub = await subscribe(app, recorder.url, ["data.vehicle.status"])
    recorder.secret = sub["secret"]
    recipient = await recipient_of(app, sub["id"])
    # Held until every worker is up, so that all three compete for the whole outbox.
    await set_status(app, sub["id"], store.DISABLED)
    pings = [
        {
            "subscription_id": sub["id"],
            "recipient_id": recipient,
            "event_type": "ping",
            "order_key": f"key-{n % 400}",  # 400 ordering keys, 7 or 8 messages each
        }
        for n in range(3000)
    ]
    now = app.clock.now()
    await app.broker.database.write(lambda s: store.enqueue(s, pings, now=now))

    names = [f"webhook-worker-{n}" for n in range(3)]
    processes = [workers.start(name, lease=LONG_LEASE) for name in names]
    await workers.connected(names)
    await set_status(app, sub["id"], store.ACTIVE)

    # Who holds which claim, sampled while the workers run (claims are cleared when done).
    message = WebhookMessageRow.__table__  # type: ignore[attr-defined]
    sampled: list[tuple[str, str]] = []

    def sample(session: Any) -> list[tuple[str, str]]:
        query = sa.select(message.c.id, message.c.claimed_by).where(
            message.c.subscription_id == sub["id"], message.c.state == store.SENDING
        )
        return [(str(i), str(w)) for i, w in session.execute(query)]

    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_TIMEOUT
    while await open_count(app, sub["id"]):
        workers.check_alive()
        assert loop.time() < deadline, f"the outbox never drained\n{workers.output()}"
        sampled += await app.broker.database.read(sample)
        await asyncio.sleep(0.02)

    rows = await outbox(app, sub["id"])
    assert len(rows) == 3001  # the subscription's own ping and the 3,000
    assert recorder.bad == []
    assert {r.state for r in rows} == {store.DELIVERED}
    assert Counter(r.attempts for r in rows) == {1: 3001}  # none claimed twice
    received = recorder.ids()
    duplicates = [i for i, n in Counter(received).items() if n > 1]
    assert duplicates == []
    assert sorted(received) == sorted(r.id for r in rows)  # each exactly once
    assert_in_order(rows, received)
    # No message was ever seen claimed by two workers, and every process took a share
    # (a claim at attempt 1 that ended delivered was delivered by its claimant).
    by_message = claimants(sampled)
    assert all(len(w) == 1 for w in by_message.values())
    per_pid = Counter(worker_pid(next(iter(w))) for w in by_message.values())
    print(f"claims sampled per worker process: {dict(per_pid)}")  # shown with -s
    assert set(per_pid) == {p.pid for p in processes}, per_pid
    workers.assert_quiet()


async def test_a_worker_killed_with_sigkill_loses_nothing(
    app: App, recorder: Recorder, workers: Workers
) -> None:
    seed = int(os.environ.get("WEBHOOK_KILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    kill_after = rng.randint(20, 400)
    about = f"seed={seed} (WEBHOOK_KILL_SEED), killed after {kill_after} requests"

    # The worker process runs on the system clock: bring the app's clock to it, so the
    # grant, the records and the messages are all current for the worker's gate.
    app.clock.set(datetime.now(UTC).replace(microsecond=0))
    now = app.clock.now()
    sub = await subscribe(app, recorder.url, ["data.vehicle.status"])
    recorder.secret = sub["secret"]
    recipient = await recipient_of(app, sub["id"])
    await set_status(app, sub["id"], store.DISABLED)
    records = [
        status_record(f"k-{n}", now - timedelta(minutes=60 - n), float(n)) for n in range(50)
    ]
    result = await app.broker.ingest.ingest(records, source="t")
    assert result.rejected == 0
    # Data messages straight into the outbox: references the gate releases at send time.
    queued = [
        {
            "subscription_id": sub["id"],
            "recipient_id": recipient,
            "contract_id": "fleet-operator",
            "event_type": "data.vehicle.status",
            "order_key": f"key-{n % 50}",  # 50 chains of 10
            "vin": CLUBMAN,
            "category": "vehicle.status",
            "since": now - timedelta(minutes=60 - n % 50),
            "until": now - timedelta(minutes=60 - n % 50) + timedelta(microseconds=1),
            "grant_id": "gr-81ac3a06b35dc15c",
        }
        for n in range(500)
    ]
    await app.broker.database.write(lambda s: store.enqueue(s, queued, now=now))
    audit_start = await app.broker.database.read(audit_store.size)

    first = workers.start("webhook-worker-doomed", lease=SHORT_LEASE)

    def kill(count: int) -> None:
        if count == kill_after:  # mid-request: this message's answer never arrives
            os.kill(first.pid, signal.SIGKILL)

    recorder.on_request = kill
    await workers.connected(["webhook-worker-doomed"])
    await set_status(app, sub["id"], store.ACTIVE)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_TIMEOUT
    while first.poll() is None:
        assert loop.time() < deadline, f"never killed; {about}\n{workers.output()}"
        if not await open_count(app, sub["id"]):
            states = Counter((r.state, r.last_error) for r in await outbox(app, sub["id"]))
            pytest.fail(f"drained before the kill: {states}; {about}\n{workers.output()}")
        await asyncio.sleep(0.05)
    assert first.returncode == -signal.SIGKILL, about
    at_kill = len(recorder.deliveries)
    abandoned = {
        r.id for r in await outbox(app, sub["id"]) if r.state == store.SENDING
    }  # claimed by the dead worker: in flight at the kill

    workers.start("webhook-worker-survivor", lease=SHORT_LEASE)
    await wait_drained(app, sub["id"], workers)

    rows = await outbox(app, sub["id"])
    assert len(rows) == 501, about  # the ping and the 500
    assert recorder.bad == [], about
    assert {r.state for r in rows} == {store.DELIVERED}, about
    received = recorder.ids()
    assert set(received) == {r.id for r in rows}, about  # nothing lost
    counts = Counter(received)
    duplicates = {i for i, n in counts.items() if n > 1}
    # At least once: only messages in flight at the kill may arrive twice, never more.
    assert duplicates <= abandoned, about
    assert max(counts.values()) <= 2, about
    assert 1 <= len(abandoned) <= CONCURRENCY, about
    assert {r.id for r in rows if r.attempts > 1} == abandoned, about
    assert all(r.attempts <= 2 for r in rows), about
    assert at_kill >= kill_after, about
    assert_in_order(rows, received)
    print(f"{about}: {len(abandoned)} in flight, {len(duplicates)} sent twice")  # shown with -s

    # The audit log: every delivery was released by the gate, the delivered payload
    # names the release that the outbox recorded, and only re-sent messages were
    # released twice.
    entries = await app.broker.database.read(
        lambda s: audit_store.read(s, start=audit_start, limit=100_000)
    )
    releases = {
        e.seq: e
        for e in entries
        if e.kind == "release" and e.channel == "webhook" and e.recipient_id == recipient
    }
    data_rows = [r for r in rows if r.event_type == "data.vehicle.status"]
    assert len(data_rows) == 500
    assert len({r.audit_seq for r in data_rows}) == 500, about
    for row in data_rows:
        entry = releases.get(row.audit_seq)
        assert entry is not None, (row.id, about)
        assert entry.decision == "released" and entry.categories == ("vehicle.status",)
        assert entry.grant_ids == ("gr-81ac3a06b35dc15c",) and entry.record_count == 1
    last: dict[str, Delivery] = {}
    for delivery in recorder.deliveries:
        if delivery.payload["type"] == "data.vehicle.status":
            assert delivery.payload["data"]["audit_seq"] in releases, about
            last[delivery.webhook_id] = delivery
    assert {i: d.payload["data"]["audit_seq"] for i, d in last.items()} == {
        r.id: r.audit_seq for r in data_rows
    }, about
    assert 500 <= len(releases) <= 500 + len(abandoned), about
    verdict = await app.broker.database.read(lambda s: audit_store.verify(s, None))
    assert verdict.ok, (verdict.problem, about)
    workers.assert_quiet()
