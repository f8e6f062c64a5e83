"""The MQTT ingress end to end: a real client publishes to a real broker, the service routes.

Topic and payload arrive intact (JSON, msgpack, arrays), bad messages are acknowledged and kept
with their raw bytes, the persistent session holds what arrives while the service is down,
shared subscriptions split the work, `mqtt.url: embedded` runs a private broker, and
`switchyard publish` speaks MQTT. The brokers are the tests' own, on free ports.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, cast

import aiomqtt
import msgpack
import pytest
from actors_for_tests import Probe, probe
from helpers import (
    THINGS,
    Serve,
    client_id,
    connected,
    numbers,
    processed,
    publish,
    sample,
    stream_entries,
    subscribed,
)
from prometheus_client import CollectorRegistry
from servers import BrokerServer, mqtt_client, mqtt_service_yaml, process_alive, wait_for

from router.cli import main as cli_main
from router.config import Config, MqttConfig, parse_config
from router.ingress.mqtt import MqttIngress, _queue_type
from router.metrics import Metrics
from router.streams import keys

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

    from router.ingress.ingest import Ingest
    from router.service.service import Service


def make_config(
    redis_url: str,
    broker: BrokerServer,
    ident: str,
    *,
    subscriptions: tuple[str, ...] = ("things/+",),
    shared_group: str | None = None,
    service: str = "",
) -> Config:
    return parse_config(
        mqtt_service_yaml(
            redis_url,
            broker.url,
            client_id=ident,
            protocol=broker.protocol,
            subscriptions=subscriptions,
            shared_group=shared_group,
            service=service,
            body=THINGS,
        )
    )


def mqtt_messages(service: Service, outcome: str) -> float:
    return sample(service, "switchyard_mqtt_messages_total", {"outcome": outcome})


def rejected(service: Service, reason: str) -> float:
    return sample(service, "switchyard_events_rejected_total", {"reason": reason})


# --- delivery ---


@pytest.mark.integration
async def test_json_and_msgpack_messages_reach_their_actor_with_topic_and_payload_intact(
    serve: Serve, redis_url: str, mqtt_broker: BrokerServer, probes: dict[str, Probe]
) -> None:
    one = {"key": "k1", "n": 1, "unicode": "é✓", "nested": {"list": [1, 2.5, "x", None]}}
    packed = {"key": "k2", "n": 2, "blob": b"\x00\x01\xff"}
    batch = [{"key": f"b{n}", "n": 10 + n} for n in range(3)]
    things = probe("things")
    async with serve(make_config(redis_url, mqtt_broker, client_id("deliver"))) as service:
        await subscribed(service)
        await publish(
            mqtt_broker,
            [
                ("things/json", json.dumps(one).encode()),
                ("things/msgpack", msgpack.packb(packed)),
                ("things/batch", json.dumps(batch).encode()),
            ],
        )

        await wait_for(lambda: len(things.handled) == 5, timeout=10)
        await wait_for(lambda: processed(service, "things") == 5)
        by_n = {event.payload["n"]: event for event in things.handled}
        assert by_n[1].payload == one
        assert by_n[1].topic == "things/json"
        assert by_n[1].key == "k1"
        assert by_n[2].payload == packed
        assert by_n[2].topic == "things/msgpack"
        assert [by_n[10 + n].payload for n in range(3)] == batch
        assert {by_n[10 + n].topic for n in range(3)} == {"things/batch"}
        assert {event.source for event in things.handled} == {"mqtt"}
        assert {event.cls for event in things.handled} == {"things"}
        assert len({event.id for event in things.handled}) == 5

        assert mqtt_messages(service, "accepted") == 3  # an array is one message
        assert mqtt_messages(service, "kept") == 0
        assert mqtt_messages(service, "dropped") == 0
        ingested = {"class": "things", "source": "mqtt"}
        assert sample(service, "switchyard_events_ingested_total", ingested) == 5
        assert connected(service) == 1
        assert service.mqtt is not None
        assert service.mqtt.connected


@pytest.mark.integration
async def test_messages_published_while_the_service_is_stopped_arrive_after_it_starts(
    serve: Serve, redis_url: str, mosquitto: BrokerServer, probes: dict[str, Probe]
) -> None:
    """The first start creates the persistent session; the broker queues for it meanwhile."""
    count = 50
    config = make_config(redis_url, mosquitto, client_id("session"))
    things = probe("things")
    async with serve(config) as service:
        await subscribed(service)

    await publish(
        mosquitto, [("things/1", json.dumps({"key": "k", "n": n}).encode()) for n in range(count)]
    )
    assert things.handled == []

    async with serve(config) as service:
        await wait_for(lambda: processed(service, "things") >= count, timeout=15)
        assert mqtt_messages(service, "accepted") == count
    assert numbers(things) == list(range(count))


# --- bad input ---


@pytest.mark.integration
async def test_bad_messages_are_acknowledged_counted_and_kept_and_the_service_carries_on(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    mosquitto: BrokerServer,
    probes: dict[str, Probe],
) -> None:
    config = make_config(
        redis_url,
        mosquitto,
        client_id("bad"),
        subscriptions=("things/+", "other/#"),
        service="max_event_bytes: 1024",
    )
    not_json_nor_msgpack = b"\xc1\x00 neither JSON nor msgpack"
    not_json = b'{"key": "k", oops'
    not_objects = b"[1, 2, 3]"
    too_large = json.dumps({"key": "k", "blob": "x" * 2000}).encode()
    unrouted = {"key": "k", "where": "nowhere"}
    things = probe("things")
    async with serve(config) as service:
        await subscribed(service)
        await publish(
            mosquitto,
            [
                ("things/binary", not_json_nor_msgpack),
                ("things/text", not_json),
                ("things/numbers", not_objects),
                ("things/big", too_large),
                ("other/nowhere", json.dumps(unrouted).encode()),
                ("things/good", json.dumps({"key": "good", "n": 1}).encode()),
            ],
        )

        await wait_for(lambda: [e.payload for e in things.handled] == [{"key": "good", "n": 1}])
        await wait_for(lambda: mqtt_messages(service, "kept") == 5)
        assert mqtt_messages(service, "accepted") == 1
        assert rejected(service, "decode_error") == 2
        assert rejected(service, "invalid") == 3  # each number of the array, on its own
        assert rejected(service, "too_large") == 1
        assert rejected(service, "unrouted") == 1
        assert service.mqtt is not None
        assert service.mqtt.connected

    kept = await stream_entries(redis, keys.rejected())
    whole = {entry["topic"].decode(): entry for entry in kept if "raw" in entry}
    assert sorted(whole) == ["things/binary", "things/text"]
    for topic, (raw, error) in {
        "things/binary": (not_json_nor_msgpack, "msgpack"),
        "things/text": (not_json, "JSON"),
    }.items():
        assert whole[topic]["raw"] == raw, topic
        assert whole[topic]["reason"] == b"decode_error", topic
        assert error in whole[topic]["error"].decode(), topic
    elements = [entry for entry in kept if "raw" not in entry]
    assert [(e["topic"], int(e["index"])) for e in elements] == [
        (b"things/numbers", 0), (b"things/numbers", 1), (b"things/numbers", 2), (b"things/big", 0)
    ]  # fmt: skip
    assert [msgpack.unpackb(e["payload"]) for e in elements[:3]] == [1, 2, 3]
    assert all(e["reason"] == b"invalid" and b"not an object" in e["error"] for e in elements[:3])
    assert elements[3]["reason"] == b"too_large"
    assert b"1024" in elements[3]["error"]
    assert "payload" not in elements[3]  # over max_event_bytes: an excerpt, not the whole event
    assert all(entry["source"] == b"mqtt" for entry in kept)
    [lost] = await stream_entries(redis, keys.unrouted())
    assert lost["topic"] == b"other/nowhere"
    assert lost["reason"] == b"unrouted"
    assert msgpack.unpackb(lost["payload"]) == unrouted

    # Acknowledged: a restart on the same session gets none of them again, only what is new.
    async with serve(config) as service:
        await subscribed(service)
        await publish(mosquitto, [("things/good", json.dumps({"key": "late", "n": 2}).encode())])
        await wait_for(lambda: len(things.handled) == 2)
        await wait_for(lambda: processed(service, "things") == 1)
        assert mqtt_messages(service, "kept") == 0
        assert mqtt_messages(service, "accepted") == 1
    assert [event.payload["n"] for event in things.handled] == [1, 2]
    assert await redis.xlen(keys.rejected()) == 6
    assert await redis.xlen(keys.unrouted()) == 1


@pytest.mark.integration
async def test_a_json_scalar_over_mqtt_is_kept_as_invalid_not_as_a_decode_error(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    mqtt_broker: BrokerServer,
    probes: dict[str, Probe],
) -> None:
    """MQTT carries no content type, but `42` is valid JSON that is not an object: "invalid",
    as it is over HTTP, with an error saying so (not "not valid msgpack")."""
    scalars = [b"42", b"-3", b"3.5", b"true", b"null", b'"text"']
    async with serve(make_config(redis_url, mqtt_broker, client_id("scalar"))) as service:
        await subscribed(service)
        await publish(mqtt_broker, [("things/scalar", body) for body in scalars])
        await wait_for(lambda: mqtt_messages(service, "kept") == len(scalars))

    entries = await stream_entries(redis, keys.rejected())
    kept = {json.dumps(msgpack.unpackb(entry["payload"])).encode(): entry for entry in entries}
    assert sorted(kept) == sorted(scalars)
    found = {raw: (e["reason"].decode(), e["error"].decode()) for raw, e in kept.items()}
    wrong = {raw: why for raw, why in found.items() if why[0] != "invalid"}
    assert not wrong, f"JSON scalars kept with the wrong reason and error: {wrong}"
    assert all("not an object" in error for _, error in found.values())


# --- several instances ---


@pytest.mark.integration
async def test_a_shared_subscription_splits_messages_between_instances_exactly_once(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    mosquitto: BrokerServer,
    probes: dict[str, Probe],
) -> None:
    count = 100
    first = make_config(redis_url, mosquitto, client_id("shared-a"), shared_group="workers")
    second = make_config(redis_url, mosquitto, client_id("shared-b"), shared_group="workers")
    things = probe("things")
    async with serve(first) as one, serve(second) as two:
        await subscribed(one)
        await subscribed(two)
        await publish(
            mosquitto,
            [("things/1", json.dumps({"key": f"k{n}", "n": n}).encode()) for n in range(count)],
        )

        await wait_for(
            lambda: processed(one, "things") + processed(two, "things") >= count, timeout=15
        )
        taken = [mqtt_messages(one, "accepted"), mqtt_messages(two, "accepted")]
        assert sum(taken) == count
        assert min(taken) > 0, f"one instance took every message: {taken}"
    assert numbers(things) == list(range(count))
    # entries-added, not XLEN: acknowledged entries are trimmed by retention
    info: Any = await redis.xinfo_stream(keys.stream("things"))
    assert info["entries-added"] == count


# --- embedded broker ---


@pytest.mark.integration
async def test_mqtt_url_embedded_runs_a_private_broker_that_stops_with_the_service(
    serve: Serve, redis_url: str, tmp_path: Path, probes: dict[str, Probe]
) -> None:
    config = parse_config(
        f"""
service: {{drain_timeout_s: 10}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
mqtt: {{url: embedded, data_dir: "{tmp_path / "mqtt"}", client_id: "{client_id("embedded")}",
        subscriptions: ["things/+"]}}
lanes: [{{name: high}}]
{THINGS}"""
    )
    things = probe("things")
    async with serve(config) as service:
        broker = service.broker
        assert broker is not None
        assert service.mqtt is not None
        assert service.mqtt.url == broker.url
        assert broker.url.startswith("mqtt://127.0.0.1:")
        assert broker.port not in (None, 1883)
        proc = broker._proc  # EmbeddedBroker keeps its process private
        assert proc is not None
        pid = proc.pid
        assert process_alive(pid)
        await subscribed(service)
        async with mqtt_client(broker.url, broker.protocol) as client:
            await client.publish("things/e", json.dumps({"key": "e", "n": 1}).encode(), qos=1)
        await wait_for(lambda: numbers(things) == [1], timeout=10)
        assert things.handled[0].topic == "things/e"

    assert service.broker is broker
    assert not process_alive(pid), f"broker pid {pid} outlived the service"


# --- the command line ---


@pytest.mark.integration
async def test_switchyard_publish_with_an_mqtt_url_delivers_to_a_running_service(
    serve: Serve,
    redis_url: str,
    mosquitto: BrokerServer,
    probes: dict[str, Probe],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`switchyard publish` speaks MQTT 5 (it has no protocol option), hence mosquitto."""
    things = probe("things")
    async with serve(make_config(redis_url, mosquitto, client_id("cli"))) as service:
        await subscribed(service)
        argv = ["publish", "things/cli", '{"key": "cli", "n": 7}', "--url", mosquitto.url]
        code = await asyncio.to_thread(cli_main, argv)

        assert code == 0
        assert "published to things/cli at QoS 1" in capsys.readouterr().out
        await wait_for(lambda: numbers(things) == [7], timeout=10)
        [event] = things.handled
        assert (event.topic, event.key, event.source) == ("things/cli", "cli", "mqtt")


# --- the local queue (no broker) ---


def test_a_full_local_queue_counts_the_qos0_message_it_drops() -> None:
    metrics = Metrics(CollectorRegistry())
    config = MqttConfig(url="mqtt://127.0.0.1:1", subscriptions=["things/+"])
    ingest = cast("Ingest", object())  # never called: only the queue is under test
    ingress = MqttIngress(config, ingest, metrics)
    queue = _queue_type(ingress)(maxsize=1)

    def message(n: int) -> aiomqtt.Message:
        return aiomqtt.Message(f"things/{n}", b"{}", qos=0, retain=False, mid=0, properties=None)

    queue.put_nowait(message(1))
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(message(2))

    dropped = metrics.registry.get_sample_value(
        "switchyard_mqtt_messages_total", {"outcome": "dropped"}
    )
    assert dropped == 1
    assert queue.qsize() == 1
    assert queue.get_nowait().topic.value == "things/1"
