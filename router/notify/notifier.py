"""The notifier: an alert to every channel of its device's owner, delivered or raised.

Handlers call it through their context (`ctx.notify`), so the event is acknowledged only once
the owner has the alert, and the class's SLA is measured to the webhook's 2xx and the
broker's PUBACK. A channel that fails now makes the handler fail, and the event is retried
with the class's backoff; channels that had delivered deliver again then, under the same
`alert_id`, which a receiver uses to drop the repeat.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from prometheus_client import Counter

from router.errors import PermanentFailure
from router.notify.alert import NotDeliveredYet
from router.notify.backchannel import Backchannel, alert_topic
from router.notify.registry import Registry
from router.notify.webhook import WebhookSender
from router.streams.keys import workload_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import CollectorRegistry
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from router.config import NotifyConfig
    from router.notify.alert import Alert
    from router.notify.device import Device

CHANNELS = ("webhook", "mqtt")
OUTCOMES = ("delivered", "retried", "refused")


class Notifier:
    """Delivers alerts for every workload's devices, from their registries in `redis`."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        config: NotifyConfig,
        *,
        broker: Callable[[], Awaitable[str | None]] | None,
        protocol: str,
        metrics: CollectorRegistry,
    ) -> None:
        self.redis = redis
        timeout_s = config.timeout_ms / 1000
        self.webhook = WebhookSender(config.webhook_secret, timeout_s)
        self.backchannel = (
            Backchannel(broker, protocol, timeout_s) if broker and config.backchannel else None
        )
        self._registries: dict[str, Registry] = {}
        self.sent = Counter(
            "switchyard_notifications_total",
            "Alert deliveries by class, channel (webhook, mqtt) and outcome: delivered, retried "
            "(may pass later: the event is retried) or refused (never will: a dead letter).",
            ["class", "channel", "outcome"],
            registry=metrics,
        )

    def registry(self, workload: str) -> Registry:
        if workload not in self._registries:
            self._registries[workload] = Registry(self.redis, workload)
        return self._registries[workload]

    async def device(self, cls: str, device_id: str) -> Device | None:
        return await self.registry(workload_of(cls)).get(device_id)

    async def notify(self, cls: str, alert: Alert) -> None:
        """Deliver `alert` on each of its device's channels; raise if one did not take it."""
        workload = workload_of(cls)
        device = await self.registry(workload).get(alert.device)
        if device is None:
            raise PermanentFailure(
                f"device {alert.device!r} is not registered with {workload}: "
                f"add it (switchyard {workload} device add), then replay the dead letter"
            )
        body = alert.body(workload, device.owner)
        sends = {}
        if device.webhook is not None:
            sends["webhook"] = self.webhook.send(device.webhook, body, alert.id)
        if device.backchannel and self.backchannel is not None:
            sends["mqtt"] = self.backchannel.send(alert_topic(workload, alert.device), body)
        if not sends:
            raise PermanentFailure(f"device {alert.device!r} has no channel: no webhook, no mqtt")
        results = await asyncio.gather(*sends.values(), return_exceptions=True)
        self._raise_first(cls, dict(zip(sends, results, strict=True)))

    def _raise_first(self, cls: str, results: dict[str, BaseException | None]) -> None:
        """Count each channel's outcome; raise a refusal first (retrying cannot help it)."""
        for channel, result in results.items():
            outcome = (
                "delivered" if result is None
                else "refused" if isinstance(result, PermanentFailure)
                else "retried"
            )  # fmt: skip
            self.sent.labels(cls, channel, outcome).inc()
        errors = sorted(
            (r for r in results.values() if r is not None),
            key=lambda error: not isinstance(error, PermanentFailure),
        )
        if not errors:
            return
        if isinstance(errors[0], (PermanentFailure, NotDeliveredYet)):
            raise errors[0]
        raise NotDeliveredYet(repr(errors[0])) from errors[0]

    async def close(self) -> None:
        await self.webhook.close()
        if self.backchannel is not None:
            await self.backchannel.close()
