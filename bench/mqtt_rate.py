"""MQTT ingest benchmark: Switchyard's QoS 1 ingest rate beside a bare aiomqtt subscriber.

    .venv/bin/python -m bench.mqtt_rate [--messages N] [--runs 3] [--json out.json]

One command starts a private broker (mosquitto when installed, else amqtt) and a private
redis-server, both on free ports in a temp dir, and stops them at the end. In both scenarios
two publisher processes (paho) send N QoS 1 messages as fast as the broker takes them
(up to 1,000 in flight), and the subscriber is timed from its first message to its Nth:
  bare        an aiomqtt subscriber (QoS 1, default settings) that only counts messages
  switchyard  the Service's MQTT ingress: each message decoded, routed, XADDed into its class
              stream and only then acknowledged; timed by the events_ingested counter (polled
              every 5 ms). The class's no-op pool consumes in the same process meanwhile, as a
              deployed service would.
Figures are quoted as a ratio to the bare subscriber of the same run: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from router.config import Config, parse_config
from router.embedded.broker import EmbeddedBroker
from router.embedded.redis import EmbeddedRedis
from router.logs import configure_logging
from router.service.service import Service

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.context import SpawnProcess

TOPIC = "bench/{n}/reading"
FILTER = "bench/+/reading"
PAYLOAD = b'{"device_id": "d%d", "value": 21.5}'
PUBLISHERS = 2  # one paho publisher tops out near the subscriber's rate; two keep it fed


def _version(protocol: str) -> aiomqtt.ProtocolVersion:
    return aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311


def _publishers(port: int, messages: int, protocol: str) -> list[SpawnProcess]:
    """Start publishing from other processes, so publishers do not share our core."""
    context = multiprocessing.get_context("spawn")
    share = messages // PUBLISHERS
    counts = [share] * (PUBLISHERS - 1) + [messages - share * (PUBLISHERS - 1)]
    processes = [
        context.Process(target=_publish_in_child, args=(port, count, protocol), daemon=True)
        for count in counts
    ]
    for process in processes:
        process.start()
    return processes


async def _join(processes: list[SpawnProcess]) -> None:
    for process in processes:
        await asyncio.to_thread(process.join, 30)


def _publish_in_child(port: int, messages: int, protocol: str) -> None:
    """paho's own network thread, not asyncio: the fastest publisher at hand, so the
    subscriber side is what the figures measure."""
    version = paho.MQTTv5 if protocol == "5" else paho.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=version)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [
            client.publish(TOPIC.format(n=n % 100), PAYLOAD % n, qos=1) for n in range(messages)
        ]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        client.loop_stop()
        client.disconnect()


async def time_bare_subscriber(
    port: int,
    messages: int,
    protocol: str,
    *,
    topics: str = FILTER,
    publish: Callable[[], list[SpawnProcess]] | None = None,
) -> float:
    """Seconds from a bare subscriber's first message to its `messages`th, on `topics`, fed
    by `publish()` (the default: this benchmark's own two publishers)."""
    async with aiomqtt.Client("127.0.0.1", port, protocol=_version(protocol)) as client:
        await client.subscribe(topics, qos=1)
        publishers = publish() if publish else _publishers(port, messages, protocol)
        received, started = 0, 0.0
        async for _ in client.messages:
            received += 1
            if received == 1:
                started = time.perf_counter()
            if received == messages:
                break
        elapsed = time.perf_counter() - started
    await _join(publishers)
    return elapsed


def _config(redis_url: str, broker_url: str, protocol: str, client_id: str) -> Config:
    return parse_config(f"""
service: {{log_level: warning}}
redis: {{url: "{redis_url}", block_ms: 100}}
http: {{enabled: false}}
mqtt:
  url: "{broker_url}"
  client_id: {client_id}
  protocol: "{protocol}"
  qos: 1
  inflight: 1000
  subscriptions: ["{FILTER}"]
lanes: [{{name: low}}]
routes: [{{topic: "{FILTER}", class: bench.reading, key: device_id}}]
classes:
  bench.reading: {{lane: low, actor: "bench.noop:NoOp", mode: queue, concurrency: 256}}
""")


async def _switchyard(
    port: int, redis: EmbeddedRedis, messages: int, protocol: str, run: int
) -> float:
    config = _config(redis.url, f"mqtt://127.0.0.1:{port}", protocol, f"bench-switchyard-{run}")
    registry = CollectorRegistry()
    labels = {"class": "bench.reading", "source": "mqtt"}

    def ingested() -> float:
        return registry.get_sample_value("switchyard_events_ingested_total", labels) or 0.0

    async with Service(config, registry=registry) as service:
        await _until(lambda: service.mqtt is not None and service.mqtt.connected)
        publishers = _publishers(port, messages, protocol)
        await _until(lambda: ingested() > 0)
        started, first = time.perf_counter(), ingested()
        await _until(lambda: ingested() >= messages)
        # Scaled to N messages as the bare subscriber's first-to-Nth span is (N - 1 gaps).
        elapsed = (time.perf_counter() - started) * messages / (messages - first + 1)
    await _join(publishers)
    return elapsed


async def _until(condition: Any, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark made no progress")
        await asyncio.sleep(0.005)


async def run(messages: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-mqtt-bench-") as tmp:
        broker = EmbeddedBroker(Path(tmp) / "broker")
        redis = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        await broker.start()
        await redis.start()
        try:
            bare, switchyard = [], []
            port = broker.port or 0
            for index in range(runs):
                bare.append(await time_bare_subscriber(port, messages, broker.protocol))
                switchyard.append(await _switchyard(port, redis, messages, broker.protocol, index))
                print(
                    f"run {index + 1}/{runs}: bare {messages / bare[-1]:,.0f}/s, "
                    f"switchyard {messages / switchyard[-1]:,.0f}/s",
                    flush=True,
                )
        finally:
            await redis.stop()
            await broker.stop()
    bare_rate = messages / statistics.median(bare)
    ingest_rate = messages / statistics.median(switchyard)
    return {
        "broker": broker.kind,
        "protocol": broker.protocol,
        "messages": messages,
        "runs": runs,
        "bare_subscriber_per_s": round(bare_rate),
        "switchyard_ingest_per_s": round(ingest_rate),
        "ratio": round(ingest_rate / bare_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    configure_logging("json", "warning")
    result = asyncio.run(run(args.messages, args.runs))
    print(
        f"\nMQTT QoS 1, {result['broker']} (v{result['protocol']}), {result['messages']:,} "
        f"messages, medians of {result['runs']}:\n"
        f"  bare aiomqtt subscriber      {result['bare_subscriber_per_s']:>9,}/s   1.00x\n"
        f"  Switchyard ingest -> streams {result['switchyard_ingest_per_s']:>9,}/s   "
        f"{result['ratio']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
