"""Fleet health against a real redis-server: a doorbell that goes quiet is announced offline
to its owner once, and online again when it reports, across two instances; its own interval
counts; nobody can fake an announcement; reports between flushes are bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from helpers import events_url, processed
from servers import wait_for, webhook_receiver

from router.config import parse_config
from router.errors import ConfigError
from router.fleet import presence as presence_module
from router.fleet.announce import Announcer
from router.fleet.presence import Presence
from router.notify.device import Device
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp
    from helpers import Serve
    from redis.asyncio import Redis

    from router.config import Config
    from router.notify.receiver import WebhookReceiver
    from router.service.service import Service

pytestmark = pytest.mark.integration

SECRET = "fleet-secret"


def fleet_config(redis_url: str) -> Config:
    return parse_config(fleet_config_text(redis_url))


def fleet_config_text(redis_url: str) -> str:
    return f"""
service: {{drain_timeout_s: 5, log_format: json, heartbeat_s: 0.2, member_timeout_s: 2}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
lanes: [{{name: medium}}]
routes:
  - {{topic: doorbell/+/temperature, class: doorbell.reading, key: topic.1}}
  - topic: doorbell/+/+
    match: {{topic.2: {{in: [offline, online]}}}}
    class: doorbell.health
    key: topic.1
classes:
  doorbell.reading: {{lane: medium, actor: "actors.builtin:Log", mode: queue}}
  doorbell.health:
    lane: medium
    actor: actors.doorbell:FleetAlert
    mode: queue
    retry: {{max_attempts: 50, backoff_ms: 50, max_backoff_ms: 200, jitter: 0}}
fleet:
  doorbell: {{classes: [doorbell.reading], interval_s: 0.3, offline_after: 2, check_every_s: 0.1}}
notify: {{webhook_secret: {SECRET}, timeout_ms: 1000}}
"""


@pytest.fixture
async def owner() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    async with webhook_receiver(SECRET) as made:
        yield made


async def report(http: aiohttp.ClientSession, service: Service, device: str) -> None:
    async with http.post(
        events_url(service, f"doorbell/{device}/temperature"), json={"value": 20}
    ) as reply:
        assert reply.status == 202, await reply.text()


async def register(service: Service, device: str, webhook: str, **settings: float) -> None:
    assert service.notifier is not None
    await service.notifier.registry("doorbell").add(
        Device(device, "ann", webhook=webhook, backchannel=False, settings=settings)
    )


def states(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    return [(a["device_id"], a["kind"]) for a in receiver.alerts]


async def test_a_quiet_doorbell_is_offline_once_and_online_when_it_reports_again(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, redis: Redis,
    owner: tuple[WebhookReceiver, str],
) -> None:  # fmt: skip
    receiver, webhook = owner
    config = fleet_config(redis_url)
    async with serve(config) as first, serve(config) as second:  # the watch is kept by one
        await register(first, "porch", webhook)
        await register(first, "patient", webhook, interval_s=60)  # reports hourly, say
        await report(http, first, "porch")
        await report(http, second, "patient")
        await report(http, second, "stranger")  # nobody's: never an alert
        await wait_for(lambda: states(receiver) == [("porch", "offline")], timeout=10)
        await wait_for(lambda: redis.hexists(keys.offline("doorbell"), "stranger"), timeout=5)

        await report(http, second, "porch")
        back = [("porch", "offline"), ("porch", "online"), ("porch", "offline")]  # quiet again
        await wait_for(lambda: states(receiver) == back, timeout=10)
        # the three above and the stranger's offline, each handled once (by either instance)
        await wait_for(
            lambda: sum(processed(s, "doorbell.health") for s in (first, second)) == 4, timeout=5
        )
        assert not await redis.hexists(keys.offline("doorbell"), "patient")  # within its interval
    assert states(receiver) == back  # nothing more, nothing twice


async def test_an_announcement_posted_from_outside_is_refused_and_kept(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, owner: tuple[WebhookReceiver, str]
) -> None:
    receiver, webhook = owner
    async with serve(fleet_config(redis_url)) as service:
        await register(service, "porch", webhook)
        url = events_url(service, "doorbell/porch/offline")
        forged = {"device_id": "porch", "state": "offline", "at": 1}
        async with http.post(url, json=forged) as reply:
            assert reply.status == 202
        await wait_for(lambda: processed(service, "doorbell.health", "dead") == 1, timeout=10)
    assert list(receiver.alerts) == []


async def test_reports_between_two_flushes_are_bounded_and_counted(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "MAX_PENDING", 3)
    config = fleet_config("redis://unused")
    presence = Presence(redis, config.fleet, Announcer(_never))
    for device in ("a", "b", "c", "d", "a"):
        presence.seen("doorbell.reading", device, 100.0)
    presence.seen("doorbell.health", "e", 100.0)  # not a reporting class
    assert presence.dropped == 1
    assert await presence.flush() == 3
    due = await redis.zrange(keys.last_seen("doorbell"), 0, -1, withscores=True)
    assert list(due) == [(b"a", 100.6), (b"b", 100.6), (b"c", 100.6)]


async def _never(messages: list[tuple[str, bytes]]) -> None:
    raise AssertionError("nothing to announce")


def test_an_allowance_shorter_than_two_checks_is_refused_saying_why(redis_url: str) -> None:
    text = fleet_config_text(redis_url).replace("interval_s: 0.3", "interval_s: 0.05")
    with pytest.raises(ConfigError, match="at least twice check_every_s"):
        parse_config(text)


async def test_announcements_that_cannot_be_sent_wait_for_the_next_pass_in_order() -> None:
    sent: list[list[tuple[str, bytes]]] = []
    outage = [True]

    async def send(messages: list[tuple[str, bytes]]) -> None:
        if outage[0]:
            raise ConnectionError("redis is away")
        sent.append(messages)

    announcer = Announcer(send)
    for device in ("a", "b"):
        announcer.add("doorbell", device, "offline", 100.0)
    assert await announcer.flush() == 0  # away: both wait
    outage[0] = False
    announcer.add("doorbell", "a", "online", 130.0)
    assert await announcer.flush() == 3
    [batch] = sent
    assert [topic for topic, _ in batch] == [
        "doorbell/a/offline", "doorbell/b/offline", "doorbell/a/online",
    ]  # fmt: skip
    assert b'"event_id": "offline-a-100.000"' in batch[0][1]  # the same id, however often sent
