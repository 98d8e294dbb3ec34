"""MQTT streaming ingest: records published on ``{prefix}/{vin}/{category}`` into the ingest.

Speaks MQTT 5 (https://docs.oasis-open.org/mqtt/mqtt/v5.0/mqtt-v5.0.html) through aiomqtt.
Delivery is at least once, end to end:

- a persistent session (Clean Start off, a Session Expiry Interval, a stable client id), so
  the MQTT server keeps the subscription and queues QoS 1 messages while the connector is down;
- manual acknowledgement: a message's PUBACK is sent only after the batch holding it came back
  from :meth:`IngestService.ingest`, which commits the batch in one transaction (rejected records
  are quarantined in it, so every outcome is durable). A message received but not yet ingested
  when the connector stops, crashes or loses its connection is delivered again;
- redelivery is harmless because the service stores a record id once (later copies are reported
  as duplicates).

Every message becomes one :class:`RawItem`: a payload that is not JSON, or that states a vin or
category other than its topic's, is handed over with an error and quarantined by the service,
never dropped here. Logs carry counts and connection state only: no topic (it names a VIN), no
payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.errors import ConfigurationError
from broker.ingest.service import BatchResult, RawItem

log = logging.getLogger(__name__)

SOURCE = "mqtt"
TOPIC_MISMATCH = "topic_mismatch"
DEFAULT_TOPIC_PREFIX = "vehicles"
DEFAULT_CLIENT_ID = "vehicle-data-broker-ingest"
#: How long the MQTT server keeps the session (and queues messages) while we are away.
DEFAULT_SESSION_EXPIRY = 7 * 24 * 3600
DEFAULT_MAX_PAYLOAD = 256 * 1024
_MAX_RECEIVE_MAXIMUM = 65_535


class IngestSink(Protocol):
    """What the connector feeds: :class:`broker.ingest.service.IngestService` or a test twin."""

    async def ingest(self, items: Sequence[RawItem], *, source: str) -> BatchResult: ...


# -- messages to items (pure) -----------------------------------------------------------------


def item_from_message(
    topic: str,
    payload: bytes,
    *,
    topic_prefix: str,
    position: int,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> RawItem:
    """The ingest item for one message on ``{topic_prefix}/{vin}/{category}``.

    The topic fills in a missing ``vin`` or ``category``; a payload that states different ones
    is not trusted and becomes an error item, like a payload that is not JSON.
    """
    if len(payload) > max_payload:
        error = f"payload too large: {len(payload)} bytes (limit {max_payload})"
        return RawItem(None, position, error, topic)
    try:
        text = payload.decode("utf-8")  # RFC 8259 §8.1: JSON exchanged between systems is UTF-8
    except UnicodeDecodeError as exc:
        error = f"malformed JSON: not UTF-8 (byte {exc.start})"
        return RawItem(None, position, error, topic, raw=payload)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        error = f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        return RawItem(None, position, error, topic, raw=payload)
    except (ValueError, RecursionError):
        return RawItem(None, position, "malformed JSON: unreadable", topic, raw=payload)
    address = _topic_address(topic, topic_prefix)
    if address is None:
        error = f"{TOPIC_MISMATCH}: the topic is not {topic_prefix}/<vin>/<category>"
        return RawItem(value, position, error, topic, raw=payload)
    if not isinstance(value, dict):
        return RawItem(value, position, None, topic)  # the service rejects a non-object
    stated = {key: value[key] for key in ("vin", "category") if key in value}
    expected = {"vin": address[0], "category": address[1]}
    differing = sorted(key for key, stated_value in stated.items() if stated_value != expected[key])
    if differing:
        error = f"{TOPIC_MISMATCH}: the payload's {' and '.join(differing)} differ from the topic"
        return RawItem(value, position, error, topic, raw=payload)
    return RawItem({**value, **expected}, position, None, topic)


def _topic_address(topic: str, prefix: str) -> tuple[str, str] | None:
    if not topic.startswith(prefix + "/"):
        return None
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) != 2 or not all(levels):
        return None
    return levels[0], levels[1]


def check_topic_prefix(prefix: str) -> str:
    """``prefix`` without trailing slashes; refuses wildcards and empty levels."""
    cleaned = prefix.rstrip("/")
    if not cleaned or any(c in cleaned for c in "+#\0") or "" in cleaned.split("/"):
        raise ValueError(f"invalid MQTT topic prefix {prefix!r}")
    return cleaned


# -- reconnect back-off -----------------------------------------------------------------------


class Backoff:
    """Exponential back-off with jitter, capped.

    The n-th delay is drawn from ``[max(minimum, base / 2), base]`` with
    ``base = min(maximum, minimum * 2**n)``: delays never shrink before the cap is reached,
    never exceed it, and clients that lost the server together do not return together.
    """

    def __init__(self, minimum: float, maximum: float, *, rng: random.Random | None = None) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("back-off needs 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.SystemRandom()

    def next_delay(self) -> float:
        base = min(self.maximum, self.minimum * 2 ** min(self.attempt, 62))
        self.attempt += 1
        return self._rng.uniform(max(self.minimum, base / 2), base)

    def reset(self) -> None:
        self.attempt = 0


# -- the connector ----------------------------------------------------------------------------


@dataclass
class ConnectorStats:
    """Counters, for health checks and tests (no personal data)."""

    received: int = 0  # messages taken from the MQTT server (redeliveries included)
    ingested_batches: int = 0  # ingest calls that returned
    ingested_items: int = 0
    acknowledged: int = 0  # messages acknowledged to the MQTT server after ingest
    failed_batches: int = 0  # ingest calls that raised (the batch is retried)
    connect_attempts: int = 0
    connections: int = 0  # connections that reached a subscription
    reconnects: int = 0  # attempts made after a failed attempt or a lost connection
    retry_delays: list[float] = field(default_factory=list)  # the last reconnect delays chosen

    def note_delay(self, delay: float) -> None:
        self.retry_delays.append(delay)
        del self.retry_delays[:-32]


@dataclass(frozen=True)
class _Pending:
    item: RawItem
    mid: int
    qos: int


class MqttIngestConnector:
    """Subscribes to ``{topic_prefix}/+/+`` (QoS 1) and feeds batches to the ingest service."""

    def __init__(
        self,
        service: IngestSink,
        *,
        host: str,
        port: int,
        topic_prefix: str,
        client_id: str,
        batch_size: int = 200,
        flush_interval: float = 0.2,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        clean_start: bool = False,
        session_expiry: int = DEFAULT_SESSION_EXPIRY,
        receive_maximum: int | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        keepalive: int = 60,
        timeout: float = 10.0,
    ) -> None:
        if not client_id:
            raise ValueError("a persistent session needs a stable, non-empty client id")
        if batch_size < 1 or flush_interval <= 0:
            raise ValueError("batch_size must be >= 1 and flush_interval > 0")
        self.service = service
        self.host = host
        self.port = port
        self.topic_prefix = check_topic_prefix(topic_prefix)
        self.topic_filter = f"{self.topic_prefix}/+/+"
        self.client_id = client_id
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.session_expiry = session_expiry
        # Unacknowledged messages the server may send at once: room for a batch being ingested
        # and the next one filling up.
        self.receive_maximum = min(_MAX_RECEIVE_MAXIMUM, receive_maximum or max(2 * batch_size, 20))
        self.max_payload = max_payload
        self.stats = ConnectorStats()
        self._reconnect = (reconnect_min, reconnect_max)
        self._backoff = Backoff(reconnect_min, reconnect_max)
        self._clean_start_next = clean_start
        self._credentials = (username, password)
        self._tls_context = tls_context
        self._keepalive = keepalive
        self._timeout = timeout
        self._position = 0
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected and subscribed."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to ingest what it holds, disconnect and return (for good)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Connect, consume and reconnect with back-off until :meth:`stop` or cancellation."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            self.stats.connect_attempts += 1
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                log.warning(
                    "mqtt ingest connection failed or lost",
                    extra={"mqtt_error": str(exc), "attempt": self._backoff.attempt + 1},
                )
            except Exception:
                log.exception("mqtt ingest session failed")
            finally:
                self._ready.clear()
            if self._stopping.is_set():
                break
            if loop.time() - started >= self._reconnect[1]:
                self._backoff.reset()  # the connection had been up a while: start afresh
            delay = self._backoff.next_delay()
            self.stats.note_delay(delay)
            self.stats.reconnects += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        log.info("mqtt ingest stopped", extra=self._counts())

    # -- one connection -----------------------------------------------------------------------

    async def _session(self) -> None:
        client = self._client()
        async with client:
            self._clean_start_next = False  # only ever the very first connection starts clean
            granted = await client.subscribe(self.topic_filter, qos=1)
            _check_granted(granted)
            self.stats.connections += 1
            self._ready.set()
            log.info(
                "mqtt ingest subscribed",
                extra={"mqtt_host": self.host, "mqtt_port": self.port, **self._counts()},
            )
            buffer: list[_Pending] = []
            reader = asyncio.create_task(self._read(client, buffer))
            flusher = asyncio.create_task(self._flush(client, buffer))
            try:
                done, _ = await asyncio.wait({reader, flusher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, flusher):
                    task.cancel()
                await asyncio.gather(reader, flusher, return_exceptions=True)
            for task in done:
                task.result()  # a lost connection surfaces here as MqttError

    def _client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry
        properties.ReceiveMaximum = self.receive_maximum
        username, password = self._credentials
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=self._clean_start_next,
            properties=properties,
            username=username,
            password=password,
            tls_context=self._tls_context,
            keepalive=self._keepalive,
            timeout=self._timeout,
            logger=logging.getLogger(f"{__name__}.client"),
        )
        _manual_ack(client).manual_ack_set(True)  # before connecting: queued messages come first
        return client

    async def _read(self, client: aiomqtt.Client, buffer: list[_Pending]) -> None:
        async for message in client.messages:
            if self._stopping.is_set():
                continue  # left unacknowledged: the server delivers it again next session
            self.stats.received += 1
            self._position += 1
            item = item_from_message(
                message.topic.value,
                _payload_bytes(message.payload),
                topic_prefix=self.topic_prefix,
                position=self._position,
                max_payload=self.max_payload,
            )
            buffer.append(_Pending(item, message.mid, message.qos))
            self._wake.set()

    async def _flush(self, client: aiomqtt.Client, buffer: list[_Pending]) -> None:
        """Hand full batches, or whatever waited ``flush_interval``, to the service."""
        loop = asyncio.get_running_loop()
        while True:
            if not buffer:
                if self._stopping.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = loop.time() + self.flush_interval
            while len(buffer) < self.batch_size and not self._stopping.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
            batch = buffer[: self.batch_size]
            if not await self._deliver(client, batch):
                return  # stopping while the service fails: the server keeps the messages
            del buffer[: len(batch)]

    async def _deliver(self, client: aiomqtt.Client, batch: list[_Pending]) -> bool:
        """Ingest ``batch``, retrying with back-off, then acknowledge it; False if given up."""
        items = [pending.item for pending in batch]
        backoff = Backoff(*self._reconnect)
        while True:
            try:
                result = await self.service.ingest(items, source=SOURCE)
                break
            except Exception as exc:
                self.stats.failed_batches += 1
                log.warning(
                    "mqtt ingest batch failed; it stays unacknowledged and is retried",
                    extra={"error": type(exc).__name__, "items": len(items)},
                )
                if self._stopping.is_set():
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
        paho = _manual_ack(client)
        for pending in batch:
            # A failed acknowledgement (the connection just dropped) only means redelivery.
            paho.ack(pending.mid, pending.qos)
        self.stats.ingested_batches += 1
        self.stats.ingested_items += len(items)
        self.stats.acknowledged += len(batch)
        log.debug("mqtt ingest batch", extra=result.summary())
        return True

    def _counts(self) -> dict[str, int]:
        return {
            "received": self.stats.received,
            "ingested_batches": self.stats.ingested_batches,
            "reconnects": self.stats.reconnects,
        }


def _manual_ack(client: aiomqtt.Client) -> Any:
    """The paho client under ``client``, for manual acknowledgement.

    aiomqtt 2.5 acknowledges a QoS 1 message as soon as it is queued in memory, and has no
    public switch (https://github.com/empicano/aiomqtt/issues/345, draft PR #346); paho-mqtt
    has one (``manual_ack_set`` / ``ack``). Fails loudly should aiomqtt's internals move.
    """
    paho = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "manual_ack_set") or not hasattr(paho, "ack"):
        raise RuntimeError("this aiomqtt version hides paho's manual acknowledgement")
    return paho


def _check_granted(granted: Sequence[Any]) -> None:
    codes = [getattr(code, "value", code) for code in granted]
    if not codes or any(code >= 0x80 for code in codes):
        raise aiomqtt.MqttError(f"subscription refused by the MQTT server: {codes}")
    if any(code < 1 for code in codes):
        log.warning("mqtt server granted QoS 0 only: messages may be lost")


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


# -- settings and wiring ----------------------------------------------------------------------


@dataclass(frozen=True)
class MqttSettings:
    """Where MQTT ingest connects; read from ``BROKER_MQTT_*``.

    ``BROKER_MQTT_URL`` (``mqtt://[user:password@]host[:port]``, or ``mqtts://`` for TLS) turns
    MQTT ingest on; ``BROKER_MQTT_TOPIC_PREFIX`` (default ``vehicles``) and
    ``BROKER_MQTT_CLIENT_ID`` (default ``vehicle-data-broker-ingest``; stable, and one per
    broker process: two processes with one id take the session from each other).
    """

    host: str
    port: int = 1883
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    client_id: str = DEFAULT_CLIENT_ID
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MqttSettings | None:
        """The settings, or None when ``BROKER_MQTT_URL`` is unset (MQTT ingest off)."""
        url = env.get("BROKER_MQTT_URL", "").strip()
        if not url:
            return None
        try:
            parts = urlsplit(url)
            if parts.scheme not in {"mqtt", "mqtts"}:
                raise ValueError(f"BROKER_MQTT_URL must be mqtt:// or mqtts://, not {url!r}")
            if not parts.hostname or parts.path not in {"", "/"}:
                raise ValueError("BROKER_MQTT_URL needs a host and no path")
            tls = parts.scheme == "mqtts"
            client_id = env.get("BROKER_MQTT_CLIENT_ID", DEFAULT_CLIENT_ID).strip()
            if not client_id:
                raise ValueError("BROKER_MQTT_CLIENT_ID must not be empty")
            return cls(
                host=parts.hostname,
                port=parts.port or (8883 if tls else 1883),
                topic_prefix=check_topic_prefix(
                    env.get("BROKER_MQTT_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX)
                ),
                client_id=client_id,
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                tls=tls,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid MQTT setting: {exc}") from exc


@dataclass
class RunningMqttIngest:
    """A started connector and its task; :meth:`close` in the app's cleanup."""

    connector: MqttIngestConnector
    task: asyncio.Task[None]

    async def close(self, grace: float = 10.0) -> None:
        """Stop: ingest and acknowledge what is held, disconnect; cancel after ``grace`` s."""
        self.connector.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def start_mqtt_ingest(
    service: IngestSink, settings: MqttSettings, **options: Any
) -> RunningMqttIngest:
    """Start MQTT ingest on the running loop; ``options`` go to :class:`MqttIngestConnector`."""
    connector = MqttIngestConnector(
        service,
        host=settings.host,
        port=settings.port,
        topic_prefix=settings.topic_prefix,
        client_id=settings.client_id,
        username=settings.username,
        password=settings.password,
        tls_context=ssl.create_default_context() if settings.tls else None,
        **options,
    )
    task = asyncio.get_running_loop().create_task(connector.run(), name="mqtt-ingest")
    task.add_done_callback(_report_end)
    return RunningMqttIngest(connector, task)


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("mqtt ingest ended unexpectedly", exc_info=task.exception())
