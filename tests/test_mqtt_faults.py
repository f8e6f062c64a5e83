"""The MQTT ingress under faults: a SIGKILLed service, Redis going away mid-stream, the broker
going away. No message acknowledged to the broker is lost; what was not acknowledged comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import msgpack
import pytest
from actors_for_tests import Probe, probe
from helpers import THINGS, Serve, client_id, connected, processed, publish, sample, subscribed
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

from router.config import Config, parse_config
from router.streams import keys
from router.streams.envelope import Envelope

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

pytestmark = pytest.mark.integration

HELD = "redis unavailable, holding mqtt messages"
MQTT_THINGS = {"class": "things", "source": "mqtt"}


# For a service in a child process: a built-in actor that leaves its trace in Redis.
FORWARDED = """
routes:
  - topic: things/+
    class: things
    key: key
classes:
  things:
    lane: high
    actor: actors.builtin:Forward
    mode: queue
    concurrency: 2
    options: {stream: "test:forwarded"}
"""


def make_config(redis_url: str, broker: BrokerServer, ident: str, inflight: int = 32) -> Config:
    return parse_config(
        mqtt_service_yaml(
            redis_url,
            broker.url,
            client_id=ident,
            protocol=broker.protocol,
            inflight=inflight,
            body=THINGS,
        )
    )


def body(n: int, key: str = "k") -> bytes:
    return json.dumps({"key": key, "n": n}).encode()


async def class_stream(redis: Redis, cls: str = "things") -> list[Envelope]:
    """Every envelope in the class stream, oldest first."""
    reply: Any = await redis.xrange(keys.stream(cls))
    return [Envelope.decode(fields[keys.ENVELOPE_FIELD]) for _, fields in reply]


async def entries_added(redis: Redis, cls: str = "things") -> int:
    """How many entries the class stream ever took (trimming does not lower it)."""
    info: Any = await redis.xinfo_stream(keys.stream(cls))
    return int(info["entries-added"])


def handled_numbers(seen: Probe) -> set[int]:
    return {int(event.payload["n"]) for event in seen.handled}


async def readyz(http: aiohttp.ClientSession, port: int) -> tuple[int, Any]:
    """(status, JSON) of /readyz; (0, None) while nothing listens on the port."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status, await response.json()
    except aiohttp.ClientConnectionError:
        return 0, None


async def metrics_text(http: aiohttp.ClientSession, port: int) -> str:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


# --- a crash between receiving and acknowledging ---


async def started(service: ServiceProcess, ready: Callable[[], Awaitable[bool]]) -> None:
    """Wait for /readyz 200; on timeout, fail with the process's exit code and last log lines."""
    try:
        await wait_for(ready, timeout=20, message="the service to be ready")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nexit code: {service.returncode}\nlast log lines:\n{service.tail()}"
        ) from None


async def test_a_message_held_when_the_service_is_sigkilled_is_delivered_after_restart(
    private_redis: RedisServer,
    mosquitto: BrokerServer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The window is made certain: Redis is down when the message arrives, so the ingress holds
    it unacknowledged (and says so in its log) until the process is killed."""
    port = free_port()
    config = tmp_path / "switchyard.yaml"
    config.write_text(
        mqtt_service_yaml(
            private_redis.url,
            mosquitto.url,
            client_id=client_id("crash"),
            protocol=mosquitto.protocol,
            service="log_format: json",
            http_port=port,
            body=FORWARDED,
        )
    )
    service = ServiceProcess(config, cwd=tmp_path)

    async def ready() -> bool:
        return (await readyz(http, port))[0] == 200

    try:
        await service.start()
        await started(service, ready)
        await private_redis.stop()
        await publish(mosquitto, [("things/1", body(1, key="crash"))])
        held = await wait_for(lambda: service.logged(HELD), timeout=10, message=HELD)
        assert held is not None
        assert held["held"] == 1
        await service.kill()
        assert service.returncode == -9

        await private_redis.start()
        async with Redis.from_url(private_redis.url) as redis:
            assert await redis.xlen(keys.stream("things")) == 0  # it never reached Redis
            await service.start()  # same config: same client_id, same session
            await started(service, ready)

            async def forwarded() -> Any:
                return await redis.xrange("test:forwarded")

            [(_, fields)] = await wait_for(forwarded, timeout=20, message="the event forwarded")
            assert msgpack.unpackb(fields[b"payload"]) == {"key": "crash", "n": 1}
            assert fields[b"key"] == b"crash"
            assert await entries_added(redis) == 1  # written once, after the restart
            [envelope] = await class_stream(redis)
            assert envelope.payload == {"key": "crash", "n": 1}
            assert (envelope.topic, envelope.source) == ("things/1", "mqtt")
            done = 'switchyard_events_processed_total{class="things",outcome="ok"} 1.0'

            async def counted() -> str | None:
                text = await metrics_text(http, port)
                return text if done in text else None

            text = await wait_for(counted, timeout=10, message=done)
            assert text is not None
            assert 'switchyard_mqtt_messages_total{outcome="accepted"} 1.0' in text
        assert await service.terminate() == 0, service.tail()
    finally:
        await service.close()


# --- Redis going away mid-stream ---


async def test_a_stream_of_messages_survives_redis_stopping_and_starting_in_the_middle(
    serve: Serve, private_redis: RedisServer, mosquitto: BrokerServer, probes: dict[str, Probe]
) -> None:
    """A third is published before the outage, a third during it, a third after; every number
    lands in the class stream at least once and the ingress resumes by itself."""
    count = 150
    redis_down = asyncio.Event()
    redis_back = asyncio.Event()
    published = 0

    async def device() -> None:
        nonlocal published
        async with mqtt_client(mosquitto.url, mosquitto.protocol) as client:
            for n in range(count):
                if n == count // 3:
                    await redis_down.wait()
                if n == 2 * count // 3:
                    await redis_back.wait()
                await client.publish("things/1", body(n, key=f"k{n % 7}"), qos=1)
                published += 1

    things = probe("things")
    # A local queue (4 x inflight) larger than the whole stream: this test is about Redis going
    # away; a broker overrunning the receive maximum is the next test's subject.
    config = make_config(private_redis.url, mosquitto, client_id("outage"), inflight=64)
    async with serve(config) as service:
        await subscribed(service)
        async with asyncio.TaskGroup() as group:
            group.create_task(device(), name="device")
            await wait_for(lambda: processed(service, "things") >= count // 6, timeout=10)
            await private_redis.stop()  # mid-stream: part of the first third may be in flight
            redis_down.set()
            await wait_for(lambda: published == 2 * count // 3, timeout=10)
            errors = {"operation": "mqtt_publish"}
            await wait_for(
                lambda: sample(service, "switchyard_redis_errors_total", errors) >= 1,
                timeout=10,
                message="the ingress to hold messages while Redis is down",
            )
            assert connected(service) == 1  # held, not disconnected
            await private_redis.start()
            redis_back.set()

        # Every number went through the class stream to the handler; the stream itself is
        # trimmed once entries are acknowledged, so its entries-added counter is compared.
        await wait_for(lambda: handled_numbers(things) == set(range(count)), timeout=20)
        async with Redis.from_url(private_redis.url) as redis:
            added = await entries_added(redis)
        ingested = sample(service, "switchyard_events_ingested_total", MQTT_THINGS)
        assert added == ingested >= count

    stream_duplicates = added - count
    handler_duplicates = len(things.handled) - count
    print(  # the report asks for the duplicate count (pytest -s shows it)
        f"\nredis outage mid-stream: {count} messages, {stream_duplicates} duplicate entries "
        f"in the class stream, {handler_duplicates} duplicate handler runs"
    )


async def test_qos1_messages_beyond_the_receive_maximum_are_never_dropped(
    serve: Serve, private_redis: RedisServer, mosquitto: BrokerServer, probes: dict[str, Probe]
) -> None:
    """With Redis away, messages pile up unacknowledged. The ingress bounds its local queue
    (4 x inflight) trusting the broker to stop at the receive maximum; a broker that sends
    more (mosquitto before 2.0.13 sends a whole receive maximum's worth per PUBACK) must not
    make it refuse a QoS 1 message: that message would be neither written nor acknowledged,
    and the broker would not send it again on this connection."""
    count, inflight = 100, 4
    things = probe("things")
    config = make_config(private_redis.url, mosquitto, client_id("overrun"), inflight=inflight)
    async with serve(config) as service:
        await subscribed(service)
        await private_redis.stop()
        await publish(mosquitto, [("things/1", body(n, key=f"k{n % 7}")) for n in range(count)])
        errors = {"operation": "mqtt_publish"}
        await wait_for(lambda: sample(service, "switchyard_redis_errors_total", errors) >= 1)
        await private_redis.start()

        with contextlib.suppress(AssertionError):
            await wait_for(lambda: handled_numbers(things) == set(range(count)), timeout=8)
        dropped = sample(service, "switchyard_mqtt_messages_total", {"outcome": "dropped"})
        missing = sorted(set(range(count)) - handled_numbers(things))
        assert not missing, (
            f"{len(missing)} of {count} QoS 1 messages never arrived (still unacknowledged at "
            f"the broker) and {dropped:g} were counted as dropped: {missing[:20]}"
        )
        assert dropped == 0


# --- the broker going away ---


async def test_when_the_broker_goes_away_readyz_says_so_and_the_ingress_reconnects(
    serve: Serve,
    redis_url: str,
    mqtt_broker: BrokerServer,
    http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:
    things = probe("things")
    config = make_config(redis_url, mqtt_broker, client_id("broker-outage"))
    async with serve(config) as service:
        port = service.http_port
        await subscribed(service)
        await publish(mqtt_broker, [("things/1", body(1))])
        await wait_for(lambda: len(things.handled) == 1, timeout=10)

        async def ready() -> bool:
            return (await readyz(http, port))[0] == 200

        await mqtt_broker.stop()
        await wait_for(lambda: connected(service) == 0, timeout=10)
        code, reply = await readyz(http, port)
        assert code == 503
        assert reply["ready"] is False
        assert any("mqtt" in problem for problem in reply["problems"]), reply["problems"]
        assert all("redis" not in problem for problem in reply["problems"]), reply["problems"]

        await mqtt_broker.start()  # the same port
        await wait_for(lambda: connected(service) == 1, timeout=20, message="reconnected")
        await wait_for(ready, timeout=5, message="/readyz to answer 200 again")
        await publish(mqtt_broker, [("things/1", body(n)) for n in (2, 3, 4)])
        await wait_for(lambda: len(things.handled) == 4, timeout=10)
        assert sorted(e.payload["n"] for e in things.handled) == [1, 2, 3, 4]


# --- the connect window ---


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kill_after_s", [0.0, 0.3], ids=["at-subscribed", "300ms-later"])
async def test_a_backlog_in_the_session_survives_a_sigkill_in_the_connect_window(
    private_redis: RedisServer,
    mosquitto: BrokerServer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    kill_after_s: float,
) -> None:
    """The broker delivers a resumed session's backlog as soon as the connection is up; every
    message of it must stay unacknowledged until it is in Redis (main: acknowledged by paho
    before manual acks were on, so 0 of 5,000 arrived after the kill and restart)."""
    count = 1_000
    port = free_port()
    config = tmp_path / "switchyard.yaml"
    config.write_text(
        mqtt_service_yaml(
            private_redis.url,
            mosquitto.url,
            client_id=client_id("window"),
            protocol=mosquitto.protocol,
            service="log_format: json",
            http_port=port,
            inflight=256,
            # What the killed process had written and not yet handled is reclaimed soon.
            body=FORWARDED.replace("concurrency: 2", "concurrency: 2\n    claim_idle_ms: 1000"),
        )
    )
    service = ServiceProcess(config, cwd=tmp_path)

    async def ready() -> bool:
        return (await readyz(http, port))[0] == 200

    try:
        await service.start()  # once, so that its persistent session exists
        await started(service, ready)
        assert await service.terminate() == 0
        await publish(mosquitto, [("things/1", body(n)) for n in range(count)])

        await service.start()
        await wait_for(lambda: service.logged("mqtt subscribed"), timeout=20)
        if kill_after_s:
            await asyncio.sleep(kill_after_s)  # the fault's moment, not a wait for an outcome
        await service.kill()

        await service.start()
        await started(service, ready)
        async with Redis.from_url(private_redis.url) as redis:

            async def forwarded() -> set[int]:
                entries: Any = await redis.xrange("test:forwarded")
                return {msgpack.unpackb(f[b"payload"])["n"] for _, f in entries}

            async def all_there() -> bool:
                return len(await forwarded()) == count

            await wait_for(all_there, timeout=30, message=f"{count} messages forwarded")
        assert await service.terminate() == 0, service.tail()
    finally:
        await service.close()
