"""MQTT ingress on aiomqtt (the only module that imports it): no message is acknowledged to the
broker before its event is in Redis, and none is ever dropped silently.

How "never lose a message" is kept:
- QoS 1/2 messages are acknowledged by hand (paho's manual ack; aiomqtt 2.x has no public API
  for it, so `_ManualAck` wraps it here) and only after their XADD succeeded.
- The session is persistent (clean start off, a session expiry), so the broker keeps what
  arrives while Switchyard is down or restarting, and redelivers what was not acknowledged.
- Flow control bounds what is in flight: MQTT v5's receive maximum (`mqtt.inflight`) stops the
  broker from sending more unacknowledged messages, so when Redis is slow or away, messages
  wait in the broker, not in this process. The local queue is bounded too; it can only fill
  with QoS 0 messages, which have no acknowledgement to withhold, and each one it drops is
  counted (`switchyard_mqtt_messages_total{outcome="dropped"}`) and logged.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiomqtt
import structlog
from paho.mqtt import client as paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from router.backoff import Backoff
from router.clock import wait_set
from router.errors import ClassOverloaded
from router.streams.transport import UNAVAILABLE
from router.tasks import until_stopped

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from router.config import MqttConfig
    from router.ingress.ingest import Ingest
    from router.metrics import Metrics

log = structlog.get_logger("switchyard.mqtt")
MqttError = aiomqtt.MqttError
SOURCE = "mqtt"


class _ManualAck:
    """Holds acknowledgements of QoS 1/2 messages until we say so (paho's manual-ack mode).

    Turned on as the client is made, before it connects: the broker starts delivering a
    resumed session's backlog the moment the connection is up, before the subscriptions are
    even confirmed, and paho acknowledges whatever arrives while manual acks are off.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = client._client  # aiomqtt exposes no public hook for manual acks
        self._paho.manual_ack_set(True)

    def ack(self, messages: Sequence[aiomqtt.Message]) -> None:
        """Acknowledge in receive order, as MQTT requires."""
        for message in messages:
            if message.qos > 0:
                self._paho.ack(message.mid, message.qos)


class MqttIngress:
    """Subscribes, batches what arrives, writes it through `Ingest`, then acknowledges it."""

    def __init__(
        self,
        config: MqttConfig,
        ingest: Ingest,
        metrics: Metrics,
        *,
        url: str | None = None,
        protocol: str | None = None,
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.metrics = metrics
        self.url = url or config.url
        self.protocol = protocol or config.protocol
        self.connected = False
        self.batch_limit = max(1, min(config.inflight, 500))
        self._stopping = asyncio.Event()
        self._connected_gauge, self._messages = metrics.enable_mqtt()

    def stop(self) -> None:
        """Stop taking messages; what was taken is written and acknowledged first."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, consume, and reconnect with jittered backoff until `stop()`."""
        backoff = Backoff(initial=0.2, maximum=10.0)
        while not self._stopping.is_set():
            client = self._client()
            acks = _ManualAck(client)  # before connecting: see _ManualAck
            try:
                async with client:
                    await self._subscribe(client)
                    self._set_connected(True)
                    backoff.reset()
                    await self._consume(client, acks)
            except aiomqtt.MqttError as exc:
                self._set_connected(False)
                delay = backoff.next_delay()
                log.warning("mqtt broker unavailable", error=str(exc), retry_in_s=round(delay, 2))
                await wait_set(self._stopping, delay)
            except Exception:  # a bug here must not take HTTP and the pools down with it
                self._set_connected(False)
                delay = backoff.next_delay()
                log.exception("mqtt ingress failed, restarting", retry_in_s=round(delay, 2))
                await wait_set(self._stopping, delay)
            else:
                return
            finally:
                self._set_connected(False)

    def _client(self) -> aiomqtt.Client:
        parts = urlsplit(self.url)
        config = self.config
        v5 = self.protocol == "5"
        return aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            identifier=config.client_id,
            username=config.username or parts.username,
            password=config.password or parts.password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            # Resume the session, so the broker keeps and redelivers what we have not acked.
            clean_session=None if v5 else False,
            clean_start=False if v5 else paho_client.MQTT_CLEAN_START_FIRST_ONLY,
            properties=_connect_properties(config) if v5 else None,
            keepalive=config.keepalive_s,
            queue_type=_queue_type(self),
            max_queued_incoming_messages=config.inflight * 4,
            tls_context=_tls_context(config) if parts.scheme == "mqtts" else None,
        )

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        group = self.config.shared_group
        for topic_filter in self.config.subscriptions:
            shared = f"$share/{group}/{topic_filter}" if group else topic_filter
            await client.subscribe(shared, qos=self.config.qos)
        log.info(
            "mqtt subscribed",
            url=self.url,
            protocol=self.protocol,
            subscriptions=self.config.subscriptions,
            shared_group=self.config.shared_group,
        )

    async def _consume(self, client: aiomqtt.Client, acks: _ManualAck) -> None:
        messages = client.messages
        while not self._stopping.is_set():
            first = await self._next(messages)
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_limit and len(messages):
                batch.append(await anext(messages))  # already queued: returns at once
            if not await self._write(batch):
                return
            acks.ack(batch)

    async def _next(self, messages: AsyncIterator[aiomqtt.Message]) -> aiomqtt.Message | None:
        """The next message, or None once `stop()` was called."""
        return await until_stopped(anext(messages), self._stopping)

    async def _write(self, batch: list[aiomqtt.Message]) -> bool:
        """Write a batch through ingest, retrying while Redis is away; nothing is acked before.
        False when the ingress was stopped before the batch could be written.

        Ingest keeps aside whatever cannot be taken, event by event, so a batch is either
        written (acknowledged) or held and tried again (Redis away or refusing writes, a class
        shedding load, or a failure of Switchyard's own, which is logged): never acknowledged
        unwritten, and never able to stop the ingress.
        """
        items = [(message.topic.value, bytes(message.payload or b"")) for message in batch]
        backoff = Backoff(initial=0.05, maximum=5.0)
        while True:
            try:
                kept = await self.ingest.accept_messages(items, SOURCE)
                break
            except UNAVAILABLE as exc:
                self.metrics.redis_errors.labels("mqtt_publish").inc()
                log.warning(
                    "redis unavailable, holding mqtt messages", error=str(exc), held=len(batch)
                )
            except ClassOverloaded as exc:
                log.warning(
                    "class overloaded, holding mqtt messages", error=exc.reason, held=len(batch)
                )
            except Exception:
                self.metrics.redis_errors.labels("mqtt_publish").inc()
                log.exception("mqtt messages could not be written, holding them", held=len(batch))
            if await wait_set(self._stopping, backoff.next_delay()):
                return False  # stopping: unacknowledged, so the broker delivers them again
        self._messages.labels("accepted").inc(len(batch) - kept)
        if kept:
            self._messages.labels("kept").inc(kept)
        return True

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._connected_gauge.set(1 if connected else 0)

    def dropped(self, message: aiomqtt.Message) -> None:
        """Count and log a QoS 0 message the full local queue could not take."""
        self._messages.labels("dropped").inc()
        log.error("mqtt queue full, QoS 0 message dropped", topic=message.topic.value)


def _connect_properties(config: MqttConfig) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = config.session_expiry_s
    properties.ReceiveMaximum = config.inflight
    return properties


def _tls_context(config: MqttConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if config.cert_file:
        context.load_cert_chain(
            str(config.cert_file), str(config.key_file) if config.key_file else None
        )
    return context


def _queue_type(ingress: MqttIngress) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's incoming queue: QoS 0 bounded and every refusal counted; QoS 1/2 never refused.

    QoS 1/2 are bounded by the broker (receive maximum, or its inflight limit for 3.1.1), and
    a refused one would be lost until the next reconnect; some brokers (mosquitto before
    2.0.13) overshoot the receive maximum, so the bound is not enforced here for them.
    """

    class CountingQueue(asyncio.Queue[aiomqtt.Message]):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__()
            self.qos0_limit = maxsize

        def put_nowait(self, item: aiomqtt.Message) -> None:
            if item.qos == 0 and self.qos0_limit and self.qsize() >= self.qos0_limit:
                ingress.dropped(item)
                raise asyncio.QueueFull  # aiomqtt logs and discards; we counted it first
            super().put_nowait(item)

    return CountingQueue


class MqttPublisher:
    """A plain MQTT publisher, for `switchyard publish` and the demo's simulated devices."""

    def __init__(
        self,
        url: str,
        *,
        protocol: str = "5",
        client_id: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        """`ca_file`: the CA that signed an `mqtts://` broker's certificate (a private one)."""
        parts = urlsplit(url)
        self._client = aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            identifier=client_id,
            username=parts.username,
            password=parts.password,
            protocol=aiomqtt.ProtocolVersion.V5
            if protocol == "5"
            else aiomqtt.ProtocolVersion.V311,
            tls_context=ssl.create_default_context(cafile=ca_file)
            if parts.scheme == "mqtts"
            else None,
        )

    async def __aenter__(self) -> MqttPublisher:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._client.__aexit__(*exc_info)

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and, for QoS 1/2, wait until the broker has it."""
        await self._client.publish(topic, payload, qos=qos)
