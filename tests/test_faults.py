"""Process-level faults: `switchyard run` as a child process, SIGKILLed and restarted under
load, drained with SIGTERM, and Redis stopped or killed under it.

The service's actor (`actors_for_tests:SlowForward`) appends every handled event id to a
Redis stream, so what was handled survives the process. A load generator posts numbered
events over HTTP, each with its own `event_id` (de-duplicated on arrival), retrying on
connection errors and 503 until it gets a 202: only then does an event count as sent.
Run with `-s` to see the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import pytest_asyncio
from helpers import THINGS, Serve, client_id, pending, routed_class, subscribed
from redis.asyncio import Redis
from servers import (
    BrokerServer,
    RedisServer,
    ServiceProcess,
    free_port,
    mqtt_client,
    mqtt_service_yaml,
    wait_for,
)

from router.config import parse_config
from router.streams import keys
from router.streams.client import connect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from router.streams.client import RedisClient

pytestmark = pytest.mark.integration

HANDLED = "test:handled"
TESTS_DIR = Path(__file__).resolve().parent


def service_yaml(
    redis_url: str,
    http_port: int,
    *,
    concurrency: int,
    sleep_s: float,
    claim_idle_ms: int = 500,
    drain_timeout_s: float = 10,
) -> str:
    return f"""
service: {{drain_timeout_s: {drain_timeout_s}, log_format: json, log_level: info}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: {http_port}}}
lanes: [{{name: high}}]
""" + routed_class(
        "work",
        "actors_for_tests:SlowForward",
        f'stream: "{HANDLED}", sleep_s: {sleep_s}',
        concurrency=concurrency,
        settings=f"claim_idle_ms: {claim_idle_ms}",
    )


@pytest.fixture
def child_imports_test_actors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service process must import `actors_for_tests` from tests/."""
    existing = os.environ.get("PYTHONPATH")
    path = str(TESTS_DIR) + (os.pathsep + existing if existing else "")
    monkeypatch.setenv("PYTHONPATH", path)


@pytest_asyncio.fixture
async def processes() -> AsyncIterator[list[ServiceProcess]]:
    """Service processes a test starts; whatever still runs is killed afterwards."""
    started: list[ServiceProcess] = []
    try:
        yield started
    finally:
        for process in started:
            await process.close()


async def start_service(
    processes: list[ServiceProcess], path: Path, port: int, http: aiohttp.ClientSession
) -> ServiceProcess:
    service = ServiceProcess(path)
    processes.append(service)
    await service.start()
    await wait_until_healthy(service, port, http)
    return service


async def wait_until_healthy(
    service: ServiceProcess,
    port: int,
    http: aiohttp.ClientSession,
    timeout: float = 15,  # noqa: ASYNC109 - a polling deadline, like wait_for's
) -> None:
    async def healthy() -> bool:
        if service.returncode is not None:
            raise AssertionError(f"service exited with {service.returncode}:\n{service.tail()}")
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(healthy, timeout=timeout, interval=0.05)


async def handled_ids(redis: RedisClient) -> list[str]:
    entries: Any = await redis.xrange(HANDLED)
    return [fields[b"id"].decode() for _, fields in entries]


@dataclass
class Loader:
    """Posts numbered events with their own ids; an event is sent once it got a 202."""

    http: aiohttp.ClientSession
    port: int
    posters: int = 4
    pace_s: float = 0.0
    sent: set[str] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)  # why a post was tried again
    _next: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, limit: int | None = None) -> None:
        """Post until `stop()` (or `limit` events), each one until it is accepted."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self.posters):
                group.create_task(self._poster(limit))

    def stop(self) -> None:
        self._stop.set()

    async def _poster(self, limit: int | None) -> None:
        while not self._stop.is_set() and (limit is None or self._next < limit):
            n = self._next
            self._next += 1
            await self._post_until_accepted(n)
            if self.pace_s:
                await asyncio.sleep(self.pace_s)

    async def _post_until_accepted(self, n: int) -> None:
        event_id = f"ev-{n:06d}"
        body = {"key": f"k{n % 16}", "n": n, "event_id": event_id}
        url = f"http://127.0.0.1:{self.port}/events/work/{n % 16}"
        while True:
            try:
                async with self.http.post(
                    url, json=body, timeout=aiohttp.ClientTimeout(total=5)
                ) as response:
                    if response.status == 202:
                        reply = await response.json()
                        assert reply["accepted"][0]["id"] == event_id
                        self.sent.add(event_id)
                        return
                    assert response.status == 503, await response.text()
                    self.refused["503"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.refused[type(exc).__name__] += 1
            await asyncio.sleep(0.02)  # a client's retry delay


def report(title: str, sent: set[str], handled: list[str], **extra: Any) -> tuple[int, int]:
    """Print the counts; returns (duplicates, lost)."""
    counts = Counter(handled)
    duplicates = sum(count - 1 for count in counts.values())
    lost = len(sent - counts.keys())
    details = " ".join(f"{name}={value}" for name, value in extra.items())
    print(
        f"\n[{title}] sent={len(sent)} handled={len(handled)} unique={len(counts)} "
        f"duplicates={duplicates} lost={lost} {details}"
    )
    return duplicates, lost


@contextlib.asynccontextmanager
async def loading(loader: Loader) -> AsyncIterator[None]:
    """Run `loader` in the background; on the way out stop it and let its last posts finish
    (or cancel it if the body failed)."""
    load = asyncio.create_task(loader.run(), name="load")
    try:
        yield
        loader.stop()
        await asyncio.wait_for(load, timeout=30)
    finally:
        loader.stop()
        if not load.done():
            load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load


async def every_sent_event_handled(redis: RedisClient, loader: Loader) -> list[str]:
    """Wait until every sent event was handled and nothing is pending; the handled ids."""

    async def all_handled() -> bool:
        return loader.sent <= set(await handled_ids(redis)) and await pending(redis) == 0

    await wait_for(all_handled, timeout=30, interval=0.1, message="every sent event handled")
    return await handled_ids(redis)


async def pending_is(redis: Redis, count: int) -> bool:
    return await pending(redis) == count


# --- SIGKILL under load ---

KILLS = 10
CONCURRENCY = 4


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("child_imports_test_actors")
async def test_a_service_sigkilled_ten_times_under_load_loses_no_accepted_event(
    any_redis_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    processes: list[ServiceProcess],
) -> None:
    """On a single Redis and on the 3-master cluster."""
    port = free_port()
    path = tmp_path / "switchyard.yaml"
    path.write_text(service_yaml(any_redis_url, port, concurrency=CONCURRENCY, sleep_s=0.005))
    rng = random.Random(20_251_126)
    loader = Loader(http, port, posters=4, pace_s=0.01)
    started = time.monotonic()
    async with connect(any_redis_url) as redis:
        service = await start_service(processes, path, port, http)
        async with loading(loader):
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.1, 0.9))  # the fault schedule, seeded
                await service.kill()
                await service.start()
                await wait_until_healthy(service, port, http)

        handled = await every_sent_event_handled(redis, loader)
        duplicates, lost = report(
            "sigkill",
            loader.sent,
            handled,
            kills=KILLS,
            retried_posts=sum(loader.refused.values()),
            seconds=round(time.monotonic() - started, 1),
        )
        assert len(loader.sent) >= 200, "too little load to say anything"
        assert lost == 0
        assert set(handled) <= loader.sent, "handled an event nobody sent"
        assert duplicates <= KILLS * CONCURRENCY
        assert await redis.xlen(keys.dead_letters("work")) == 0
        assert await service.terminate() == 0


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("child_imports_test_actors")
@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_redis_going_away_and_coming_back_mid_load_loses_no_accepted_event(
    private_redis: RedisServer,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    processes: list[ServiceProcess],
    outage: str,
) -> None:
    """Redis with its append-only file, stopped gracefully or SIGKILLed, then started again."""
    port = free_port()
    path = tmp_path / "switchyard.yaml"
    path.write_text(service_yaml(private_redis.url, port, concurrency=CONCURRENCY, sleep_s=0.005))
    loader = Loader(http, port, posters=4, pace_s=0.01)
    service = await start_service(processes, path, port, http)
    async with loading(loader):
        for _ in range(2):
            await grown(lambda: len(loader.sent), by=50)  # under load
            await (private_redis.stop() if outage == "stop" else private_redis.kill())
            await grown(loader.refused.total, by=5)  # posts are refused meanwhile
            await private_redis.start()

    async with Redis.from_url(private_redis.url) as redis:
        handled = await every_sent_event_handled(redis, loader)
        _, lost = report(f"redis {outage}", loader.sent, handled, refused=dict(loader.refused))
        assert lost == 0
        assert service.returncode is None, "the service died with its Redis"
    assert await service.terminate() == 0


async def grown(count: Callable[[], int], by: int, timeout: float = 10) -> None:  # noqa: ASYNC109
    """Wait until `count()` grew by `by` from what it is now."""
    target = count() + by
    await wait_for(lambda: count() >= target, timeout=timeout)


# --- drain on SIGTERM ---


async def events_in_handlers(
    private_redis: RedisServer,
    redis: Redis,
    processes: list[ServiceProcess],
    http: aiohttp.ClientSession,
    tmp_path: Path,
    *,
    count: int,
    sleep_s: float,
    drain_timeout_s: float = 10,
) -> tuple[ServiceProcess, int, set[str]]:
    """Start a service whose handlers sleep `sleep_s` and post `count` events; returns once all
    of them are in a handler (pending, none handled): (service, its port, the sent ids)."""
    port = free_port()
    config = tmp_path / "switchyard.yaml"
    config.write_text(
        service_yaml(
            private_redis.url,
            port,
            concurrency=4,
            sleep_s=sleep_s,
            drain_timeout_s=drain_timeout_s,
        )
    )
    service = await start_service(processes, config, port, http)
    loader = Loader(http, port, posters=1)
    await loader.run(limit=count)
    await wait_for(lambda: pending_is(redis, count), timeout=5, message=f"{count} in handlers")
    assert await handled_ids(redis) == []
    return service, port, loader.sent


@pytest.mark.usefixtures("child_imports_test_actors")
async def test_sigterm_finishes_and_acknowledges_in_flight_events_then_exits_0(
    private_redis: RedisServer,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    processes: list[ServiceProcess],
) -> None:
    async with Redis.from_url(private_redis.url) as redis:
        service, _, sent = await events_in_handlers(
            private_redis,
            redis,
            processes,
            http,
            tmp_path,
            count=3,
            sleep_s=1.0,
        )

        signalled = time.monotonic()
        assert await service.terminate(timeout=15) == 0

        # done when the handlers were, not after the 10 s drain timeout
        assert time.monotonic() - signalled < 10
        assert sorted(await handled_ids(redis)) == sorted(sent)
        assert await pending(redis) == 0
        stopped = service.logged("switchyard stopped")
        assert stopped is not None, service.tail()
        assert stopped["drained"] is True


@pytest.mark.usefixtures("child_imports_test_actors")
async def test_a_second_sigterm_during_a_long_drain_exits_at_once_leaving_entries_pending(
    private_redis: RedisServer,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    processes: list[ServiceProcess],
) -> None:
    async with Redis.from_url(private_redis.url) as redis:
        service, _, _ = await events_in_handlers(
            private_redis,
            redis,
            processes,
            http,
            tmp_path,
            count=2,
            sleep_s=30,
            drain_timeout_s=25,
        )
        assert service.pid is not None
        os.kill(service.pid, signal.SIGTERM)
        await wait_for(lambda: service.logged("signal received, draining"), timeout=5)
        assert service.returncode is None  # draining: the handlers sleep for 30 s

        os.kill(service.pid, signal.SIGTERM)
        # at once: well before the handlers (30 s) or the drain timeout (25 s) would end it
        await wait_for(lambda: service.returncode is not None, timeout=10)

        assert service.returncode != 0
        assert await pending(redis) == 2, "the unfinished entries stay pending for a reclaim"
        assert await handled_ids(redis) == []


@pytest.mark.usefixtures("child_imports_test_actors")
async def test_a_drain_past_drain_timeout_exits_0_and_a_restart_reclaims_the_unfinished_entries(
    private_redis: RedisServer,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    processes: list[ServiceProcess],
) -> None:
    async with Redis.from_url(private_redis.url) as redis:
        service, port, sent = await events_in_handlers(
            private_redis,
            redis,
            processes,
            http,
            tmp_path,
            count=2,
            sleep_s=1.5,
            drain_timeout_s=0.3,
        )

        assert await service.terminate(timeout=10) == 0

        # it gave up at the drain timeout instead of waiting for the handlers
        stopped = service.logged("switchyard stopped")
        assert stopped is not None, service.tail()
        assert stopped["drained"] is False
        assert await pending(redis) == 2
        assert await handled_ids(redis) == []

        await start_service(processes, service.config_path, port, http)  # a new consumer
        await wait_for(lambda: pending_is(redis, 0), timeout=10)
        assert sorted(await handled_ids(redis)) == sorted(sent)


# --- a poison message at the ingress ---


# Bodies that break the decoder instead of being refused by it (see test_properties.py).
BREAKERS = {
    "deeply-nested-json": b"[" * 100_000 + b"]" * 100_000,
    "msgpack-map-with-an-array-key": b"\x81\x91\x01\x01",
    "timestamp-beyond-float-range": b'{"key": "t", "timestamp": 1' + b"0" * 400 + b"}",
}


@pytest.mark.usefixtures("probes")
@pytest.mark.parametrize("breaker", sorted(BREAKERS))
async def test_a_malformed_mqtt_message_is_kept_aside_and_the_ingress_goes_on(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    mosquitto: BrokerServer,
    breaker: str,
) -> None:
    config = parse_config(
        mqtt_service_yaml(redis_url, mosquitto.url, client_id=client_id("poison"), body=THINGS)
    )
    async with serve(config) as service:
        await subscribed(service)
        async with mqtt_client(mosquitto.url) as client:
            await client.publish("things/1", BREAKERS[breaker], qos=1)
            await client.publish("things/2", b'{"key": "after"}', qos=1)

        async def after_accepted() -> bool:
            entries: Any = await redis.xrange(keys.stream("things"))
            return any(b"after" in fields[keys.ENVELOPE_FIELD] for _, fields in entries)

        await wait_for(after_accepted, timeout=5, message="the message after the bad one")
        kept = await redis.xlen(keys.rejected()) + await redis.xlen(keys.stream("things"))
        assert kept == 2, "the bad message is neither kept aside nor accepted"
        assert service.mqtt is not None
        assert service.mqtt.connected


@pytest.mark.usefixtures("probes")
@pytest.mark.parametrize("content_type", ["application/json", "application/msgpack"])
@pytest.mark.parametrize("breaker", sorted(BREAKERS))
async def test_a_malformed_http_body_is_refused_or_kept_never_answered_with_a_server_error(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, breaker: str, content_type: str
) -> None:
    config = parse_config(f"""
redis: {{url: "{redis_url}", block_ms: 50}}
http: {{port: 0}}
lanes: [{{name: high}}]
{THINGS}""")
    async with serve(config) as service:
        url = f"http://127.0.0.1:{service.http_port}/events/things/1"
        headers = {"Content-Type": content_type}
        async with http.post(url, data=BREAKERS[breaker], headers=headers) as response:
            assert response.status in (202, 400, 413, 422), await response.text()
        async with http.post(url, json={"key": "after"}) as response:
            assert response.status == 202
