"""Doorbell alerts that reach the owner: the registry (CLI and HTTP), a signed webhook and the
MQTT back-channel, against a real redis-server, a real mosquitto and the receiver the demo
runs; the receiver down and back, a wrong secret, an unknown device, both payload shapes.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from helpers import events_url, processed, sample, stream_entries
from servers import free_port, mqtt_client, wait_for

from router.cli import main as switchyard
from router.config import load_config, parse_config
from router.notify.device import Device, InvalidDevice
from router.notify.receiver import WebhookReceiver
from router.routing.rules import Router, topic_matches
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import aiohttp
    from helpers import Serve
    from redis.asyncio import Redis
    from servers import BrokerServer

    from router.config import Config
    from router.service.service import Service

pytestmark = pytest.mark.integration

SECRET = "test-secret"
RING = "doorbell.button_press"
BRIEF_EXAMPLE = {"event": "button_press", "priority": "high"}


def doorbell_yaml(redis_url: str, broker_url: str = "off", secret: str = SECRET) -> str:
    return f"""
service: {{drain_timeout_s: 5, log_format: json}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
mqtt:
  url: "{broker_url}"
  client_id: sy-test-doorbell-{free_port()}
  subscriptions: [doorbell/+/button_press, doorbell/+/motion_detected, doorbell/+/events]
lanes: [{{name: high}}]
routes:
  - {{topic: doorbell/+/button_press, class: {RING}, key: topic.1}}
  - topic: doorbell/+/events
    match: {{event: {{equals: button_press}}}}
    class: {RING}
    key: topic.1
  - {{topic: doorbell/+/motion_detected, class: doorbell.motion, key: topic.1}}
classes:
  {RING}:
    lane: high
    actor: actors.doorbell:OwnerAlert
    mode: queue
    concurrency: 8
    retry: {{max_attempts: 100, backoff_ms: 50, max_backoff_ms: 200, jitter: 0}}
  doorbell.motion:
    lane: high
    actor: actors.doorbell:Detection
    mode: stream
notify: {{webhook_secret: "{secret}", timeout_ms: 500}}
"""


def doorbell_config(redis_url: str, **settings: Any) -> Config:
    return parse_config(doorbell_yaml(redis_url, **settings))


class Receiver:
    """The demo's webhook receiver on a port of its own, that can go down and come back."""

    def __init__(self, secret: str = SECRET) -> None:
        self.port = free_port()
        self.receiver = WebhookReceiver(secret)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.receiver.app())
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def kinds(self) -> list[tuple[str, str]]:
        return [(a["kind"], a["device_id"]) for a in self.receiver.alerts]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    await made.start()
    yield made
    await made.stop()


async def register(
    http: aiohttp.ClientSession, service: Service, device: str, **fields: Any
) -> None:
    url = f"http://127.0.0.1:{service.http_port}/doorbell/devices/{device}"
    async with http.put(url, json=fields) as response:
        assert response.status in (200, 201), await response.text()


async def ring(http: aiohttp.ClientSession, service: Service, device: str, count: int = 1) -> None:
    for _ in range(count):
        async with http.post(events_url(service, f"doorbell/{device}/button_press"), json={}) as r:
            assert r.status == 202, await r.text()


def delivered(service: Service, channel: str = "webhook", cls: str = RING) -> float:
    labels = {"class": cls, "channel": channel, "outcome": "delivered"}
    return sample(service, "switchyard_notifications_total", labels)


# --- the ring, end to end ---


async def test_the_briefs_ring_reaches_the_owner_signed_and_on_the_backchannel(
    serve: Serve, redis_url: str, mosquitto: BrokerServer, http: aiohttp.ClientSession,
    receiver: Receiver,
) -> None:  # fmt: skip
    async with (
        serve(doorbell_config(redis_url, broker_url=mosquitto.url)) as service,
        mqtt_client(mosquitto.url) as app,
    ):
        await register(http, service, "front-door", owner="ann", webhook=receiver.url)
        await app.subscribe("doorbell/front-door/alerts", qos=1)
        async with mqtt_client(mosquitto.url) as door:  # the brief's shape: one topic
            await door.publish("doorbell/front-door/events", json.dumps(BRIEF_EXAMPLE), qos=1)
        message = await asyncio.wait_for(anext(aiter(app.messages)), timeout=10)
        await wait_for(lambda: processed(service, RING) == 1, timeout=10)

    [alert] = receiver.receiver.alerts  # the receiver checked the signature
    assert (alert["kind"], alert["device_id"], alert["owner"]) == ("ring", "front-door", "ann")
    assert alert["details"] == {"priority": "high"}
    assert json.loads(bytes(message.payload))["alert_id"] == alert["alert_id"]
    assert not message.retain
    assert delivered(service) == delivered(service, "mqtt") == 1


async def test_with_the_receiver_down_every_ring_waits_and_arrives_once_it_is_back(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, redis: Redis
) -> None:
    down = Receiver()  # its port is known, nothing listens yet
    async with serve(doorbell_config(redis_url)) as service:
        await register(http, service, "porch", owner="bob", webhook=down.url, backchannel=False)
        await ring(http, service, "porch", count=5)
        retried = {"class": RING, "channel": "webhook", "outcome": "retried"}
        await wait_for(
            lambda: sample(service, "switchyard_notifications_total", retried) >= 5, timeout=10
        )
        assert processed(service, RING) == 0  # nothing acknowledged before delivery
        await down.start()
        try:
            await wait_for(lambda: len(down.receiver.alerts) == 5, timeout=15)
            await wait_for(lambda: processed(service, RING) == 5, timeout=5)
        finally:
            await down.stop()
    assert down.kinds() == [("ring", "porch")] * 5
    assert await redis.xlen(keys.dead_letters(RING)) == 0


async def test_a_receiver_that_refuses_the_signature_gets_a_dead_letter_saying_so(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, redis: Redis
) -> None:
    other = Receiver(secret="not-the-same")
    await other.start()
    try:
        async with serve(doorbell_config(redis_url)) as service:
            await register(http, service, "gate", owner="cy", webhook=other.url, backchannel=False)
            await ring(http, service, "gate")
            await wait_for(lambda: processed(service, RING, "dead") == 1, timeout=10)
            async with http.get(f"http://127.0.0.1:{service.http_port}/readyz") as ready:
                assert ready.status == 200
    finally:
        await other.stop()
    [dead] = await stream_entries(redis, keys.dead_letters(RING))
    assert b"answered 401" in dead["error"]
    assert b"bad signature" in dead["error"]
    assert other.receiver.refused == 1  # refused once: a refusal is not retried


async def test_a_ring_from_a_device_nobody_registered_is_kept_and_replays_once_it_is(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, redis: Redis, tmp_path: Path
) -> None:
    receiver = Receiver()
    await receiver.start()
    path = tmp_path / "switchyard.yaml"
    path.write_text(doorbell_yaml(redis_url))
    async with serve(load_config(path)) as service:
        await ring(http, service, "stranger")
        await wait_for(lambda: processed(service, RING, "dead") == 1, timeout=10)
        [dead] = await stream_entries(redis, keys.dead_letters(RING))
        assert b"'stranger' is not registered with doorbell" in dead["error"]
        await register(http, service, "stranger", owner="dee", webhook=receiver.url)
        replay = ["dlq", "replay", "--config", str(path), "--class", RING, "--all"]
        assert await asyncio.to_thread(switchyard, replay) == 0
        await wait_for(lambda: receiver.kinds() == [("ring", "stranger")], timeout=10)
    await receiver.stop()
    assert await redis.xlen(keys.dead_letters(RING)) == 0


async def test_motion_alerts_are_motion_and_follow_each_devices_threshold(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with serve(doorbell_config(redis_url)) as service:
        for device, threshold in (("keen", 0.5), ("calm", None)):
            settings = {"motion_threshold": threshold} if threshold else {}
            await register(
                http, service, device, owner="eve", webhook=receiver.url, backchannel=False,
                settings=settings,
            )  # fmt: skip
        for device in ("keen", "calm"):
            url = events_url(service, f"doorbell/{device}/motion_detected")
            async with http.post(url, json={"confidence": 0.6}) as response:
                assert response.status == 202
        await wait_for(lambda: processed(service, "doorbell.motion") == 2, timeout=10)
    assert receiver.kinds() == [("motion", "keen")]


# --- the registry ---


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"owner": ""}, "owner"),
        ({"owner": "a", "webhook": "ftp://x"}, "http(s) URL"),
        ({"owner": "a", "settings": {"motion_threshold": 1.5}}, "between 0 and 1"),
        ({"owner": "a", "settings": {"motion_threshold": True}}, "must be a number"),
        ({"owner": "a", "settings": {"volume": 3}}, "unknown setting"),
        ({"owner": ["a"]}, "owner"),
        ({"owner": "a", "backchannel": "yes"}, "true or false"),
        ({"owner": "a", "admin": True}, "unknown field"),
    ],
)
def test_a_device_that_cannot_be_used_is_refused_saying_why(
    fields: dict[str, Any], said: str
) -> None:
    with pytest.raises(InvalidDevice, match=said.replace("(", r"\(").replace(")", r"\)")):
        Device.of(fields, device_id="d1")


async def test_the_registry_over_http_refuses_bad_devices_and_lists_good_ones(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serve(doorbell_config(redis_url)) as service:
        base = f"http://127.0.0.1:{service.http_port}/doorbell/devices"
        async with http.put(f"{base}/d1", json={"owner": "a", "webhook": "nope"}) as bad:
            assert bad.status == 400
            assert "http(s) URL" in (await bad.json())["error"]
        async with http.put(f"{base}/d%2F1", json={"owner": "a"}) as slash:
            assert slash.status in (400, 404)
        async with http.put(f"{base}/d1", json={"owner": "a"}) as made:
            assert made.status == 201
        async with http.put(f"{base}/d1", json={"owner": "b"}) as replaced:
            assert replaced.status == 200
        async with http.get(base) as listing:
            assert await listing.json() == {
                "count": 1,
                "devices": [{"id": "d1", "owner": "b", "webhook": None, "backchannel": True,
                             "settings": {}}],
            }  # fmt: skip
        async with http.delete(f"{base}/d1") as removed:
            assert removed.status == 200
        async with http.get(f"{base}/d1") as gone:
            assert gone.status == 404


def test_the_registry_from_the_command_line(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "switchyard.yaml"
    config.write_text(doorbell_yaml(redis_url))
    base = ["doorbell", "device"]
    add = [*base, "add", "front-door", "--owner", "ann", "--webhook", "http://127.0.0.1:9/alerts",
           "--motion-threshold", "0.7", "--config", str(config)]  # fmt: skip
    assert switchyard(add) == 0
    assert switchyard([*base, "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "front-door" in listed
    assert "motion_threshold=0.7" in listed
    assert "1 device(s)" in listed
    bad = [*base, "add", "x", "--owner", "a", "--sound-threshold", "2", "--config", str(config)]
    assert switchyard(bad) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert switchyard([*base, "remove", "front-door", "--config", str(config)]) == 0
    assert switchyard([*base, "show", "front-door", "--config", str(config)]) == 1


# --- routing: both shapes in, alerts never back in ---


def test_both_payload_shapes_route_and_the_backchannel_is_not_subscribed() -> None:
    config = load_config("config.yaml")
    router = Router.from_config(config)
    shapes = {
        "doorbell/d1/button_press": {},
        "doorbell/d1/events": BRIEF_EXAMPLE,
    }
    for topic, payload in shapes.items():
        routed = router.route(topic, payload)
        assert routed is not None, topic
        assert routed.cls == RING
    motion = router.route("doorbell/d1/events", {"event": "motion_detected", "confidence": 1})
    assert motion is not None
    assert motion.cls == "doorbell.motion"
    alerts = ["doorbell", "d1", "alerts"]
    assert not any(topic_matches(f.split("/"), alerts) for f in config.mqtt.subscriptions)
