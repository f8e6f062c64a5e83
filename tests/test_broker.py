"""The embedded MQTT broker: mosquitto with sessions on disk, amqtt when mosquitto is missing,
and the tests' own broker wrapper (same port and data dir across stop, kill and restart).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest
from actors_for_tests import Probe, probe
from helpers import THINGS, Serve, client_id, connected, numbers, publish, subscribed
from servers import BrokerServer, mqtt_client, mqtt_service_yaml, process_alive, wait_for

from router.config import Config, parse_config
from router.embedded.broker import EmbeddedBroker

if TYPE_CHECKING:
    from pathlib import Path

    from router.service.service import Service

pytestmark = pytest.mark.integration


def make_config(redis_url: str, url: str, protocol: str, ident: str) -> Config:
    return parse_config(
        mqtt_service_yaml(redis_url, url, client_id=ident, protocol=protocol, body=THINGS)
    )


async def connected_or_crashed(service: Service) -> None:
    """Wait until the ingress is subscribed; fail with its error if its task died instead.

    (An ingress task that raises takes the service's task group down, and with it the task
    that started the service: here, the test. The cancellation is turned into a failure.)
    """
    try:
        await wait_for(lambda: connected(service) == 1, timeout=10, message="mqtt connected")
    except asyncio.CancelledError:
        task = service.mqtt_task  # the ingress task, to tell why it died
        if task is not None and task.done() and not task.cancelled() and task.exception():
            pytest.fail(f"the MQTT ingress crashed instead of connecting: {task.exception()!r}")
        raise


async def test_without_mosquitto_the_embedded_broker_is_amqtt_and_a_service_receives_on_it(
    serve: Serve, redis_url: str, tmp_path: Path, probes: dict[str, Probe]
) -> None:
    broker = EmbeddedBroker(tmp_path / "amqtt", binary="no-such-mosquitto")
    assert broker.kind == "amqtt"
    assert broker.protocol == "3.1.1"
    things = probe("things")
    await broker.start()
    try:
        assert broker.port not in (None, 1883)
        config = make_config(redis_url, broker.url, "3.1.1", client_id("amqtt"))
        async with serve(config) as service:
            await connected_or_crashed(service)
            async with mqtt_client(broker.url, protocol="3.1.1") as client:
                for n in range(3):
                    payload = json.dumps({"key": f"k{n}", "n": n}).encode()
                    await client.publish(f"things/{n}", payload, qos=1)
            await wait_for(lambda: numbers(things) == [0, 1, 2], timeout=10)
            assert {event.topic for event in things.handled} == {f"things/{n}" for n in range(3)}
        proc = broker._proc  # EmbeddedBroker keeps its process private
        assert proc is not None
        pid = proc.pid
    finally:
        await broker.stop()
    assert not process_alive(pid)


async def test_the_test_broker_comes_back_on_the_same_port_after_stop_and_after_kill(
    mqtt_broker: BrokerServer,
) -> None:
    port = mqtt_broker.port
    assert port != 1883
    first = mqtt_broker.pid
    assert first is not None
    await mqtt_broker.stop()
    assert mqtt_broker.pid is None
    assert not process_alive(first)
    await mqtt_broker.start()
    await mqtt_broker.kill()
    assert mqtt_broker.pid is None
    await mqtt_broker.restart()  # a stop of a killed broker is a no-op, then start
    assert mqtt_broker.port == port
    assert mqtt_broker.pid not in (None, first)
    async with mqtt_client(mqtt_broker.url, mqtt_broker.protocol) as client:
        await client.publish("ping/1", b"{}", qos=1)


async def test_mosquitto_keeps_a_session_and_its_queued_messages_across_a_restart(
    serve: Serve, redis_url: str, mosquitto: BrokerServer, probes: dict[str, Probe]
) -> None:
    """The broker is stopped (SIGTERM: it saves to its data dir) while the service is away;
    the session and what was queued for it are still there when both come back."""
    count = 30
    config = make_config(redis_url, mosquitto.url, mosquitto.protocol, client_id("persist"))
    things = probe("things")
    async with serve(config) as service:
        await subscribed(service)
    await publish(
        mosquitto, [("things/1", json.dumps({"key": "k", "n": n}).encode()) for n in range(count)]
    )

    await mosquitto.restart()
    assert (mosquitto.data_dir / "mosquitto.db").exists()

    async with serve(config):
        await wait_for(lambda: len(things.handled) >= count, timeout=15)
    assert numbers(things) == list(range(count))
