"""The demo's doorbell owners and clinic staff: a webhook receiver of their own on a free
port, the demo's doorbells and the clinic's pager registered to it, so the rings, confident
detections and reactions of the simulation reach someone and the demo can show they did."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from aiohttp import web

from router.notify.device import Device
from router.notify.receiver import WebhookReceiver

if TYPE_CHECKING:
    from router.config import Config
    from router.service.service import Service

HOST = "127.0.0.1"
OWNERS = ("ann", "bob", "cy", "dee", "eve")
CLINIC_PAGER = "observation"  # the clinic's reactions page it (config.yaml, clinic.reaction)


def with_a_secret(config: Config) -> Config:
    """The config with a webhook secret: the one set, else a fresh one for this demo."""
    if config.notify.webhook_secret:
        return config
    notify = config.notify.model_copy(update={"webhook_secret": secrets.token_hex(16)})
    signed: Config = config.model_copy(update={"notify": notify})
    return signed


class DemoOwners:
    """Start with `open()`, read `line()` while it runs, `close()` at the end."""

    def __init__(self, service: Service, devices: int) -> None:
        self.service = service
        self.devices = devices
        self.receiver = WebhookReceiver(service.config.notify.webhook_secret)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def open(self) -> None:
        self._runner = web.AppRunner(self.receiver.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{HOST}:{port}/alerts"
        notifier = self.service.notifier
        assert notifier is not None  # the service has connected
        registry = notifier.registry("doorbell")
        for number in range(1, self.devices + 1):
            threshold = 0.6 if number % 2 else 0.9  # some owners want to hear of more
            await registry.add(
                Device(
                    id=f"door-{number:03d}",
                    owner=OWNERS[number % len(OWNERS)],
                    webhook=self.url,
                    settings={"motion_threshold": threshold, "sound_threshold": 0.9},
                )
            )
        pager = Device(id=CLINIC_PAGER, owner="observation nurse", webhook=self.url)
        await notifier.registry("clinic").add(pager)

    def line(self) -> str:
        kinds = self.receiver.kinds
        counts = ", ".join(
            f"{kinds[kind]} {kind}"
            for kind in ("ring", "motion", "sound", "offline", "online", "reaction")
        )
        return f"owners' webhook ({self.url}) received: {counts}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
