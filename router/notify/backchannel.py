"""The MQTT back-channel: alerts published on `<workload>/<device>/alerts` at QoS 1, not
retained, for the owner's app. Delivered means the broker's PUBACK.

One connection per process, opened on the first alert and again after a failure. The
ingress must not subscribe to these topics (the default config lists the device topics it
reads, and `switchyard check` says so when a subscription would take the alerts back in).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

from router.ingress.mqtt import MqttError, MqttPublisher
from router.notify.alert import NotDeliveredYet

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

TOPIC = "{workload}/{device}/alerts"


def alert_topic(workload: str, device: str) -> str:
    return TOPIC.format(workload=workload, device=device)


class Backchannel:
    """Publishes alerts to the broker `broker()` names (None while there is none: retried)."""

    def __init__(
        self, broker: Callable[[], Awaitable[str | None]], protocol: str, timeout_s: float
    ) -> None:
        self.broker = broker
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._publisher: MqttPublisher | None = None
        self._opening = asyncio.Lock()

    async def send(self, topic: str, body: bytes) -> None:
        try:
            publisher = await self._connected()
            await asyncio.wait_for(publisher.publish(topic, body, qos=1), self.timeout_s)
        except (MqttError, OSError, TimeoutError) as exc:
            await self.close()  # the next alert connects again
            raise NotDeliveredYet(f"mqtt back-channel {topic}: {exc!r}") from exc

    async def _connected(self) -> MqttPublisher:
        async with self._opening:
            if self._publisher is None:
                url = await self.broker()
                if url is None:
                    raise NotDeliveredYet("no MQTT broker for the back-channel")
                client_id = f"switchyard-alerts-{uuid.uuid4().hex[:8]}"
                publisher = MqttPublisher(url, protocol=self.protocol, client_id=client_id)
                await asyncio.wait_for(publisher.__aenter__(), self.timeout_s)
                self._publisher = publisher
            return self._publisher

    async def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with contextlib.suppress(MqttError, OSError, TimeoutError):
                await publisher.__aexit__(None, None, None)
