"""`switchyard demo`: the service plus a simulator of the three workloads and a live summary.

The simulator posts over HTTP, exactly as a device gateway or app backend would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp

from router.cli.clinic_day import ClinicDay, run_day
from router.cli.listeners import Listeners
from router.cli.owners import DemoOwners
from router.clock import wait_set
from router.ingress.mqtt import MqttError, MqttPublisher
from router.ops.status import Reporter, render
from router.tasks import cancel_and_wait

if TYPE_CHECKING:
    from collections.abc import Iterator

    from router.service.service import Service

DOORBELL_EVENTS = (
    ("temperature", 35), ("light", 35), ("motion_detected", 15), ("sound_detected", 8),
    ("video_upload", 5), ("audio_upload", 3), ("button_press", 2),
)  # fmt: skip
WORKLOAD_WEIGHTS = (55, 45)  # music, doorbell; the clinic has a day of its own (clinic_day)
FLAKY_CYCLE_S, FLAKY_QUIET_S = 20.0, 14.0  # the last doorbell's outages (make run: 4 s interval)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    rate: float = 200.0
    duration: float | None = None
    every: float = 5.0


class Simulator:
    """Makes plausible events of the three workloads as (topic, payload) pairs."""

    DEVICES = 50  # door-001 ... door-050, registered to the demo's owners

    def __init__(self, seed: int | None = None, users: int = 500, devices: int = DEVICES) -> None:
        self.random = random.Random(seed)
        self.listeners = Listeners(self.random, users)
        self.devices = devices
        self.started = time.monotonic()

    def events(self, count: int) -> Iterator[tuple[str, dict[str, Any]]]:
        makers = (self.listeners.interactions, self._doorbell)
        made = 0
        while made < count:
            batch = self.random.choices(makers, WORKLOAD_WEIGHTS)[0]()
            yield from batch[: count - made]
            made += len(batch)

    def _doorbell(self) -> list[tuple[str, dict[str, Any]]]:
        return [self.doorbell()]

    def doorbell(self) -> tuple[str, dict[str, Any]]:
        number = self.random.randint(1, self.devices)
        if number == self.devices and self._flaky_is_quiet():
            number = self.random.randint(1, self.devices - 1)  # its neighbours speak for it
        device = f"door-{number:03d}"
        names, weights = zip(*DOORBELL_EVENTS, strict=True)
        event = self.random.choices(names, weights)[0]
        payload: dict[str, Any] = {"device_id": device, "timestamp": datetime.now(UTC).timestamp()}
        if event == "temperature":
            payload["value"] = round(self.random.gauss(14, 6), 1)
        elif event == "light":
            payload["value"] = round(self.random.uniform(0, 1000))
        elif event in ("motion_detected", "sound_detected"):
            payload["confidence"] = round(self.random.random(), 2)
        elif event == "video_upload":
            payload.update(clip_id=f"clip-{self.random.getrandbits(32):08x}", duration_s=12.5)
        elif event == "audio_upload":  # a clip's reference, as the media store announces it
            clip = f"clip-{self.random.getrandbits(32):08x}"
            payload.update(
                clip_id=clip, kind="audio", content_type="audio/ogg", bytes=48_000,
                sha256=f"{self.random.getrandbits(256):064x}",
                url=f"/media/doorbell/{device}/{clip}",
            )  # fmt: skip
        return f"doorbell/{device}/{event}", payload

    def _flaky_is_quiet(self) -> bool:
        """The last doorbell drops off its network for `FLAKY_QUIET_S` of every
        `FLAKY_CYCLE_S`, so the demo shows one going offline and coming back."""
        return (time.monotonic() - self.started) % FLAKY_CYCLE_S >= FLAKY_CYCLE_S - FLAKY_QUIET_S


async def run_demo(
    service: Service, options: DemoOptions, stop: asyncio.Event, out: TextIO = sys.stdout
) -> None:
    """Drive `service` with simulated traffic and print a summary until `stop` or the duration.

    Doorbells publish over MQTT when the service has an MQTT ingress; apps post over HTTP.
    """
    senders = _Senders(f"http://127.0.0.1:{service.http_port}/events/")
    mqtt_url = service.mqtt.url if service.mqtt else None
    via = f"doorbells over MQTT ({mqtt_url}), the rest over HTTP" if mqtt_url else "HTTP"
    print(f"switchyard demo: {options.rate:g} events/s via {via}; Ctrl-C to stop", file=out)
    reporter, whole_run = (
        Reporter(service.config, service.metrics),
        Reporter(service.config, service.metrics),
    )
    for started in (reporter, whole_run):
        started.report(
            service.clock.monotonic(), *service.views.pool_figures()
        )  # the starting line
    async with contextlib.AsyncExitStack() as stack:
        senders.http = await stack.enter_async_context(aiohttp.ClientSession())
        if service.mqtt is not None:
            publisher = MqttPublisher(service.mqtt.url, protocol=service.mqtt.protocol)
            senders.mqtt = await stack.enter_async_context(publisher)
        owners = DemoOwners(service, Simulator.DEVICES)
        stack.push_async_callback(owners.close)
        await owners.open()
        group = await stack.enter_async_context(asyncio.TaskGroup())
        day = ClinicDay()
        report = _report(service, reporter, (owners, day), options.every, out)
        tasks = [
            group.create_task(_simulate(senders, options.rate), name="demo:simulator"),
            group.create_task(
                run_day(day, senders.send, service.transport.redis), name="demo:clinic"
            ),
            group.create_task(report, name="demo:report"),
        ]
        await wait_set(stop, options.duration)
        await cancel_and_wait(*tasks)
        _print_table(service, whole_run, "whole run", out)
        _print_lines(service, owners, day, out)


@dataclass(slots=True)
class _Senders:
    http_url: str
    http: aiohttp.ClientSession | None = None
    mqtt: MqttPublisher | None = None

    async def send(self, topic: str, batch: list[dict[str, Any]]) -> None:
        """One topic's events: each as an MQTT message for devices, one HTTP post otherwise."""
        try:
            if self.mqtt is not None and topic.startswith("doorbell/"):
                for payload in batch:
                    await self.mqtt.publish(topic, json.dumps(payload).encode())
            elif self.http is not None:
                async with self.http.post(self.http_url + topic, json=batch) as response:
                    await response.read()
        except (aiohttp.ClientError, MqttError):
            pass  # the service is stopping or overloaded; the summary shows what got through


HISTORY = 20_000  # music interactions of the past week, for the analytics to have a week
HISTORY_POST = 1_000
HISTORY_TOPIC = "music/backfill/events"  # one topic for a whole post: the key is the user_id


async def _simulate(senders: _Senders, rate: float) -> None:
    simulator = Simulator()
    async with asyncio.TaskGroup() as group:
        group.create_task(_backfill(senders, simulator), name="demo:backfill")
        group.create_task(_live(senders, simulator, rate), name="demo:live")


async def _backfill(senders: _Senders, simulator: Simulator) -> None:
    """The past week of music, beside the live traffic: a post of `HISTORY_POST` at a time."""
    history = [payload for _, payload in simulator.listeners.history(HISTORY)]
    for start in range(0, len(history), HISTORY_POST):
        await senders.send(HISTORY_TOPIC, history[start : start + HISTORY_POST])


async def _live(senders: _Senders, simulator: Simulator, rate: float) -> None:
    tick = 0.02
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    carry = 0.0
    while True:
        carry += rate * tick
        count, carry = int(carry), carry - int(carry)
        await _send(senders, list(simulator.events(count)))
        next_tick += tick
        await asyncio.sleep(max(0.0, next_tick - loop.time()))


async def _send(senders: _Senders, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Events grouped by topic, a post (or MQTT messages) per topic, all at once."""
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, payload in events:
        by_topic.setdefault(topic, []).append(payload)
    await asyncio.gather(*(senders.send(topic, batch) for topic, batch in by_topic.items()))


async def _report(
    service: Service,
    reporter: Reporter,
    told: tuple[DemoOwners, ClinicDay],
    every: float,
    out: TextIO,
) -> None:
    while True:
        await asyncio.sleep(every)
        _print_table(service, reporter, f"last {every:g}s", out)
        _print_lines(service, *told, out)


def _print_lines(service: Service, owners: DemoOwners, day: ClinicDay, out: TextIO) -> None:
    """What the owners and the clinic's staff were told, and the clinic's day so far."""
    board = f"http://127.0.0.1:{service.http_port}/clinic"
    print(owners.line(), file=out)
    print(day.line(time.monotonic(), board), file=out, flush=True)


def _print_table(service: Service, reporter: Reporter, title: str, out: TextIO) -> None:
    """The `switchyard status` table for this process, over the time since the last one."""
    report = reporter.report(service.clock.monotonic(), *service.views.pool_figures())
    print(f"\n{title}: " + render(service.config, service.stats, {"demo": report}), file=out)
    out.flush()
