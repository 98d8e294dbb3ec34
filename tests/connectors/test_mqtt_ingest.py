"""MQTT streaming ingest against the real Mosquitto server, plus its pure parts.

Every test gets its own topic prefix and client id (the server is shared by parallel runs) and
deletes its MQTT session at the end. The ingest service is replaced by a recording twin (it is
tested on its own), except in the one test that runs the real service on both databases.
When the server is unreachable the MQTT tests are skipped, except under ``CI=true``, where they
fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlmodel import Session, select
from worlds import make_world

from broker.errors import ConfigurationError
from broker.ingest.service import BatchResult, RawItem, RecordResult
from broker.store.database import Database
from broker.store.tables import QuarantineRow, TelemetryRecordRow
from connectors.mqtt_ingest import (
    TOPIC_MISMATCH,
    Backoff,
    MqttIngestConnector,
    MqttSettings,
    item_from_message,
    start_mqtt_ingest,
)

ROOT = Path(__file__).resolve().parents[2]
MQTT_URL = os.environ.get("BROKER_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
IN_CI = os.environ.get("CI", "").lower() == "true"
COOPER = "WMWXR31002TA10001"
COUNTRYMAN = "WMWXR51093TB20002"
STATUS = "vehicle.status"
WAIT = 15.0


# -- fixtures and helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    host: str
    port: int


@pytest.fixture(scope="module")
def mqtt_server() -> Server:
    """The shared Mosquitto server; skip (or, under CI=true, fail) when it is unreachable."""
    settings = MqttSettings.from_env({"BROKER_MQTT_URL": MQTT_URL})
    assert settings is not None
    try:
        socket.create_connection((settings.host, settings.port), timeout=3).close()
    except OSError as exc:
        reason = f"MQTT server unreachable at {MQTT_URL}: {exc}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the MQTT tests must run, so this fails)")
        pytest.skip(reason)
    return Server(settings.host, settings.port)


@dataclass
class Names:
    """A topic prefix and client ids of this test's own; their sessions deleted afterwards."""

    server: Server
    prefix: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:12]}/vehicles")
    client_ids: list[str] = field(default_factory=list)

    def client_id(self) -> str:
        self.client_ids.append(f"test-ingest-{uuid.uuid4().hex[:12]}")
        return self.client_ids[-1]

    def topic(self, vin: str, category: str = STATUS) -> str:
        return f"{self.prefix}/{vin}/{category}"


@pytest.fixture
async def names(mqtt_server: Server) -> AsyncIterator[Names]:
    made = Names(mqtt_server)
    yield made
    for client_id in made.client_ids:
        await forget_session(mqtt_server, client_id)


async def forget_session(server: Server, client_id: str) -> None:
    """Connect with Clean Start and a zero expiry: the server drops the session."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0
    client = aiomqtt.Client(
        server.host,
        server.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        properties=properties,
    )
    async with client:
        pass


def load_publisher() -> ModuleType:
    """``examples/mqtt_publish.py`` (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("mqtt_publish", ROOT / "examples/mqtt_publish.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def publish(server: Server, names: Names, records: Iterable[dict[str, Any]]) -> int:
    count: int = await load_publisher().publish_records(
        records, host=server.host, port=server.port, topic_prefix=names.prefix
    )
    return count


async def publish_raw(server: Server, messages: Sequence[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client(server.host, server.port) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def record(n: int, *, vin: str = COOPER, category: str = STATUS, tag: str = "r") -> dict[str, Any]:
    return {
        "record_id": f"{tag}-{n:05d}",
        "vin": vin,
        "category": category,
        "recorded_at": "2026-03-10T11:00:00Z",
        "data": {"mileage_km": 1000.0 + n, "battery_voltage_v": 12.6, "doors_locked": True},
    }


class RecordingService:
    """The ingest service's in-memory twin: records every batch, can fail or hang."""

    def __init__(self, *, failures: int = 0, hang: bool = False) -> None:
        self.calls: list[list[RawItem]] = []
        self.failures = failures
        self.hang = hang
        self.entered = asyncio.Event()

    async def ingest(self, items: Sequence[RawItem], *, source: str) -> BatchResult:
        assert source == "mqtt"
        self.entered.set()
        if self.hang:
            await asyncio.Event().wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database unavailable")
        self.calls.append(list(items))
        return BatchResult(tuple(_result(item) for item in items))

    @property
    def items(self) -> list[RawItem]:
        return [item for call in self.calls for item in call]

    def record_ids(self) -> list[str]:
        return [item.value["record_id"] for item in self.items if isinstance(item.value, dict)]


def _result(item: RawItem) -> RecordResult:
    value = item.value if isinstance(item.value, dict) else {}
    status = "rejected" if item.error else "stored"
    return RecordResult(item.position, value.get("record_id"), status, item.error and "malformed")


async def eventually(predicate: Callable[[], bool], within: float = WAIT) -> None:
    """Poll ``predicate`` every 20 ms; fail after ``within`` seconds."""
    for _ in range(int(within / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"still false after {within} s")


def connector_for(
    server: Server, names: Names, service: Any, client_id: str, **options: Any
) -> MqttIngestConnector:
    options = {"flush_interval": 0.05, "reconnect_min": 0.05, "session_expiry": 300, **options}
    return MqttIngestConnector(
        service,
        host=server.host,
        port=server.port,
        topic_prefix=names.prefix,
        client_id=client_id,
        **options,
    )


@contextlib.asynccontextmanager
async def running(connector: MqttIngestConnector, *, ready: bool = True) -> AsyncIterator[None]:
    task = asyncio.create_task(connector.run())
    try:
        if ready:
            await asyncio.wait_for(connector.wait_ready(), WAIT)
        yield
    finally:
        connector.stop()
        await asyncio.wait_for(task, WAIT)


# -- pure: messages to items ------------------------------------------------------------------


def test_topic_fills_in_missing_vin_and_category() -> None:
    payload = {"record_id": "r-1", "recorded_at": "2026-03-10T11:00:00Z", "data": {}}
    item = item_from_message(
        f"p/{COOPER}/{STATUS}", json.dumps(payload).encode(), topic_prefix="p", position=7
    )
    assert item.error is None
    assert item.value == {**payload, "vin": COOPER, "category": STATUS}
    assert (item.position, item.source_ref) == (7, f"p/{COOPER}/{STATUS}")


@pytest.mark.parametrize(
    ("stated", "differing"),
    [
        ({"vin": COUNTRYMAN}, "vin"),
        ({"category": "vehicle.position"}, "category"),
        ({"vin": COUNTRYMAN, "category": "vehicle.position"}, "category and vin"),
        ({"vin": None}, "vin"),
    ],
)
def test_a_payload_contradicting_its_topic_is_an_error_item(
    stated: dict[str, Any], differing: str
) -> None:
    raw = json.dumps({"record_id": "r-1", **stated}).encode()
    item = item_from_message(f"a/b/{COOPER}/{STATUS}", raw, topic_prefix="a/b", position=1)
    assert item.error == f"{TOPIC_MISMATCH}: the payload's {differing} differ from the topic"
    assert item.value == {"record_id": "r-1", **stated}  # as stated, never "corrected"
    assert item.raw == raw


def test_a_payload_agreeing_with_its_topic_is_kept() -> None:
    raw = json.dumps(record(1)).encode()
    item = item_from_message(f"p/{COOPER}/{STATUS}", raw, topic_prefix="p", position=1)
    assert (item.error, item.value) == (None, record(1))


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{not json", "malformed JSON: Expecting property name enclosed in double quotes"),
        (b"", "malformed JSON: Expecting value at line 1 column 1"),
        (b"\xff\xfe\xfa", "malformed JSON: not UTF-8"),
        (b"[" * 100_000, "malformed JSON"),
    ],
)
def test_a_payload_that_is_not_json_is_an_error_item_with_its_raw_bytes(
    payload: bytes, error: str
) -> None:
    item = item_from_message(f"p/{COOPER}/{STATUS}", payload, topic_prefix="p", position=3)
    assert item.value is None
    assert item.error is not None and item.error.startswith(error)
    assert item.raw == payload


def test_a_non_object_payload_goes_to_the_service_unchanged() -> None:
    item = item_from_message(f"p/{COOPER}/{STATUS}", b"[1, 2]", topic_prefix="p", position=1)
    assert (item.value, item.error) == ([1, 2], None)


def test_an_oversized_payload_is_an_error_item_without_its_bytes() -> None:
    item = item_from_message(
        f"p/{COOPER}/{STATUS}", b"x" * 2000, topic_prefix="p", position=1, max_payload=1000
    )
    assert item.error == "payload too large: 2000 bytes (limit 1000)"
    assert (item.value, item.raw) == (None, None)


# -- pure: back-off and settings --------------------------------------------------------------


def test_backoff_grows_until_capped_and_jitters_at_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(30)]
    assert delays[0] == 0.5
    growing = delays[:7]  # bases 0.5, 1, 2, 4, 8, 16, 30
    assert growing == sorted(growing)
    assert all(0.5 <= d <= 30.0 for d in delays)
    capped = delays[10:]
    assert all(d >= 15.0 for d in capped) and len(set(capped)) > 1
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_refuses_an_empty_range() -> None:
    with pytest.raises(ValueError, match="minimum"):
        Backoff(1.0, 0.5)


def test_settings_are_off_without_a_url() -> None:
    assert MqttSettings.from_env({}) is None
    assert MqttSettings.from_env({"BROKER_MQTT_URL": " "}) is None


def test_settings_from_env() -> None:
    settings = MqttSettings.from_env(
        {
            "BROKER_MQTT_URL": "mqtts://ingest:p%40ss@mqtt.example.test",
            "BROKER_MQTT_TOPIC_PREFIX": "fleet/eu/",
            "BROKER_MQTT_CLIENT_ID": "broker-1",
        }
    )
    assert settings == MqttSettings(
        host="mqtt.example.test",
        port=8883,
        topic_prefix="fleet/eu",
        client_id="broker-1",
        username="ingest",
        password="p@ss",
        tls=True,
    )
    assert "p@ss" not in repr(settings)
    plain = MqttSettings.from_env({"BROKER_MQTT_URL": "mqtt://127.0.0.1:1884"})
    assert plain == MqttSettings(host="127.0.0.1", port=1884)


@pytest.mark.parametrize(
    "env",
    [
        {"BROKER_MQTT_URL": "http://127.0.0.1:1883"},
        {"BROKER_MQTT_URL": "mqtt://:1883"},
        {"BROKER_MQTT_URL": "mqtt://127.0.0.1:1883/topic"},
        {"BROKER_MQTT_URL": "mqtt://127.0.0.1:notaport"},
        {"BROKER_MQTT_URL": "mqtt://127.0.0.1", "BROKER_MQTT_TOPIC_PREFIX": "vehicles/#"},
        {"BROKER_MQTT_URL": "mqtt://127.0.0.1", "BROKER_MQTT_TOPIC_PREFIX": "a//b"},
        {"BROKER_MQTT_URL": "mqtt://127.0.0.1", "BROKER_MQTT_CLIENT_ID": " "},
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        MqttSettings.from_env(env)


# -- against Mosquitto ------------------------------------------------------------------------


async def test_messages_published_while_down_arrive_after_reconnect_once_each(
    mqtt_server: Server, names: Names
) -> None:
    service = RecordingService()
    client_id = names.client_id()
    async with running(connector_for(mqtt_server, names, service, client_id)):
        pass  # the session and its subscription now exist on the server
    assert service.calls == []

    records = [record(n) for n in range(40)]
    assert await publish(mqtt_server, names, records) == 40

    again = connector_for(mqtt_server, names, service, client_id)
    async with running(again):
        await eventually(lambda: len(set(service.record_ids())) == 40)
    ids = service.record_ids()
    assert sorted(set(ids)) == [r["record_id"] for r in records]
    assert all(item.error is None for item in service.items)
    assert again.stats.acknowledged == again.stats.received == len(ids)

    # Everything was acknowledged: a third session of the same client gets nothing more.
    before = len(service.items)
    third = connector_for(mqtt_server, names, service, client_id)
    async with running(third):
        await asyncio.sleep(0.5)
    assert third.stats.received == 0 and len(service.items) == before


async def test_a_batch_whose_ingest_never_finished_is_delivered_again(
    mqtt_server: Server, names: Names
) -> None:
    client_id = names.client_id()
    hanging = RecordingService(hang=True)
    crashed = connector_for(mqtt_server, names, hanging, client_id)
    task = asyncio.create_task(crashed.run())
    await asyncio.wait_for(crashed.wait_ready(), WAIT)
    await publish(mqtt_server, names, [record(n) for n in range(5)])
    await asyncio.wait_for(hanging.entered.wait(), WAIT)
    task.cancel()  # the process dies while the batch is being written
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert crashed.stats.acknowledged == 0

    service = RecordingService()
    async with running(connector_for(mqtt_server, names, service, client_id)):
        await eventually(lambda: len(set(service.record_ids())) == 5)
    assert sorted(set(service.record_ids())) == [f"r-{n:05d}" for n in range(5)]


async def test_a_failing_ingest_is_retried_and_acknowledged_only_after_it_succeeds(
    mqtt_server: Server, names: Names
) -> None:
    service = RecordingService(failures=2)
    connector = connector_for(mqtt_server, names, service, names.client_id())
    async with running(connector):
        await publish(mqtt_server, names, [record(n) for n in range(3)])
        await eventually(lambda: len(service.record_ids()) == 3)
    assert connector.stats.failed_batches == 2
    assert connector.stats.acknowledged == 3


async def test_bad_messages_reach_the_service_as_error_items_and_the_rest_goes_through(
    mqtt_server: Server, names: Names
) -> None:
    service = RecordingService()
    connector = connector_for(mqtt_server, names, service, names.client_id(), flush_interval=0.5)
    no_vin = {k: v for k, v in record(2).items() if k not in {"vin", "category"}}
    messages = [
        (names.topic(COOPER), json.dumps(record(1)).encode()),
        (names.topic(COOPER), b'{"record_id": "r-broken", '),
        (names.topic(COOPER), json.dumps(record(3, vin=COUNTRYMAN)).encode()),
        (names.topic(COOPER), json.dumps(no_vin).encode()),
    ]
    async with running(connector):
        await publish_raw(mqtt_server, messages)
        await eventually(lambda: len(service.items) == 4)
    good, broken, mismatch, filled = sorted(service.items, key=lambda item: item.position)
    assert good.error is None and good.value == record(1)
    assert broken.value is None and broken.error is not None
    assert broken.error.startswith("malformed JSON") and broken.raw == messages[1][1]
    assert mismatch.error is not None and mismatch.error.startswith(TOPIC_MISMATCH)
    assert mismatch.value["vin"] == COUNTRYMAN and mismatch.raw == messages[2][1]
    assert filled.error is None and filled.value == record(2)
    assert connector.stats.acknowledged == 4


async def test_messages_are_batched_by_size(mqtt_server: Server, names: Names) -> None:
    service = RecordingService()
    client_id = names.client_id()
    async with running(connector_for(mqtt_server, names, service, client_id)):
        pass
    await publish(mqtt_server, names, [record(n) for n in range(100)])
    connector = connector_for(mqtt_server, names, service, client_id, batch_size=25)
    connector.flush_interval = 2.0  # only a full batch, or the last one, is flushed
    async with running(connector):
        await eventually(lambda: len(set(service.record_ids())) == 100)
    sizes = [len(call) for call in service.calls]
    assert max(sizes) <= 25
    assert len(sizes) < 100 and sizes.count(25) >= 3


async def test_a_lone_message_is_flushed_after_the_interval(
    mqtt_server: Server, names: Names
) -> None:
    service = RecordingService()
    connector = connector_for(mqtt_server, names, service, names.client_id(), batch_size=200)
    async with running(connector):
        await publish(mqtt_server, names, [record(1)])
        await eventually(lambda: len(service.items) == 1)
    assert service.calls == [service.items]


async def test_reconnects_with_growing_delays_until_the_server_is_there(
    mqtt_server: Server, names: Names
) -> None:
    port = _free_port()
    service = RecordingService()
    connector = MqttIngestConnector(
        service,
        host="127.0.0.1",
        port=port,
        topic_prefix=names.prefix,
        client_id=names.client_id(),
        flush_interval=0.05,
        reconnect_min=0.02,
        reconnect_max=0.16,
        session_expiry=300,
    )
    async with running(connector, ready=False):
        await eventually(lambda: connector.stats.connect_attempts >= 6)
        assert connector.stats.connections == 0 and not connector.ready
        delays = list(connector.stats.retry_delays)
        assert delays[:4] == sorted(delays[:4]) and delays[3] > delays[0]
        assert all(0.02 <= delay <= 0.16 for delay in delays)
        assert connector.stats.reconnects >= 5

        async with _forwarding(port, mqtt_server):
            await asyncio.wait_for(connector.wait_ready(), WAIT)
            await publish(mqtt_server, names, [record(1)])
            await eventually(lambda: service.record_ids() == ["r-00001"])
            connector.stop()
            await eventually(lambda: not connector.ready)
    assert connector.stats.connections == 1


async def test_start_mqtt_ingest_runs_until_closed(mqtt_server: Server, names: Names) -> None:
    service = RecordingService()
    settings = MqttSettings(
        host=mqtt_server.host,
        port=mqtt_server.port,
        topic_prefix=names.prefix,
        client_id=names.client_id(),
    )
    running_ingest = start_mqtt_ingest(service, settings, flush_interval=0.05)
    await asyncio.wait_for(running_ingest.connector.wait_ready(), WAIT)
    await publish(mqtt_server, names, [record(1), record(2)])
    await eventually(lambda: len(service.items) == 2)
    await running_ingest.close()
    assert running_ingest.task.done() and not running_ingest.connector.ready


async def test_records_are_stored_by_the_real_ingest_service(
    mqtt_server: Server, names: Names, db: Database
) -> None:
    world = await make_world(db)  # the demo seed; world.ingest is the real service on db
    service = world.ingest
    results: list[BatchResult] = []

    class Observed:
        async def ingest(self, items: Sequence[RawItem], *, source: str) -> BatchResult:
            results.append(await service.ingest(items, source=source))
            return results[-1]

    client_id = names.client_id()
    async with running(connector_for(mqtt_server, names, Observed(), client_id)):
        pass
    good = [record(n, tag="mqtt") for n in range(10)]
    await publish(mqtt_server, names, [*good, good[0]])  # one published twice
    await publish_raw(mqtt_server, [(names.topic(COOPER), b"not json")])
    async with running(connector_for(mqtt_server, names, Observed(), client_id)):
        await eventually(lambda: sum(len(r.results) for r in results) == 12)
    outcomes = [result for batch in results for result in batch.results]
    assert sum(batch.stored for batch in results) == 10
    assert sum(batch.duplicates for batch in results) == 1
    assert [r.code for r in outcomes if r.status == "rejected"] == ["malformed"]

    def stored_rows(session: Session) -> tuple[list[str], list[tuple[str, str]]]:
        ids = session.exec(select(TelemetryRecordRow.id).where(TelemetryRecordRow.vin == COOPER))
        quarantined = session.exec(select(QuarantineRow.source, QuarantineRow.reason_code))
        return sorted(i for i in ids if i.startswith("mqtt-")), list(quarantined)

    ids, quarantined = db.run_sync(stored_rows)
    assert ids == [r["record_id"] for r in good]
    assert quarantined == [("mqtt", "malformed")]


# -- a TCP forwarder standing in for a server that comes up late -------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def _forwarding(port: int, target: Server) -> AsyncIterator[None]:
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.host, target.port)
        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            pipes.add(asyncio.create_task(task))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
        await _settle(pipes)


async def _settle(tasks: set[asyncio.Task[None]]) -> None:
    waiting: list[Awaitable[Any]] = list(tasks)
    if waiting:
        await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), WAIT)
