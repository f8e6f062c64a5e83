"""Fleet over MQTT: a fleet of doorbells reporting through a real broker into a service that
watches them for silence, beside a bare subscriber; then how long until the silent are found.

    .venv/bin/python -m bench.fleet_mqtt [--devices 100000] [--registered 1000000] [--quick]

One command starts a private mosquitto and redis-server, registers `--registered` doorbells
(as `switchyard doorbell device add` would), then:

  bare        two publisher processes (paho, QoS 1) send one reading from each of `--devices`
              doorbells (`doorbell/<id>/temperature`: a minute of a fleet reporting every
              60 s, sent as fast as the broker takes it) to an aiomqtt subscriber that counts
  switchyard  the same into the Service's MQTT ingress, with fleet health on for that class
              (every report moves the device's due time); timed by its ingest counter
  silence     after its last report every device is silent: with an allowance of 3 x 2 s and
              a check every second, the time from the last device's due moment until all of
              them are offline; and the due set's Redis memory per device

Quote the ingest rate as a ratio to the bare subscriber of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bench.fleet import _register
from bench.mqtt_rate import _join, _until, time_bare_subscriber
from router.config import Config, parse_config
from router.embedded.broker import EmbeddedBroker
from router.embedded.redis import EmbeddedRedis
from router.logs import configure_logging
from router.service.service import Service
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import Sequence
    from multiprocessing.context import SpawnProcess

TOPIC = "doorbell/door-{n:07d}/temperature"
FILTER = "doorbell/+/temperature"
PUBLISHERS = 2
INTERVAL_S, OFFLINE_AFTER, CHECK_S = 2.0, 3.0, 1.0


def _publishers(port: int, devices: int) -> list[SpawnProcess]:
    context = multiprocessing.get_context("spawn")
    halves = [range(devices // 2), range(devices // 2, devices)]
    processes = [
        context.Process(target=_publish_in_child, args=(port, half.start, half.stop), daemon=True)
        for half in halves
    ]
    for process in processes:
        process.start()
    return processes


def _publish_in_child(port: int, first: int, last: int) -> None:
    """One reading per device, from paho's own thread: the subscriber side is what is timed."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [
            client.publish(TOPIC.format(n=n), b'{"value": 21.5}', qos=1) for n in range(first, last)
        ]
        for info in infos:
            info.wait_for_publish(timeout=120)
    finally:
        client.loop_stop()
        client.disconnect()


def _config(redis_url: str, broker_url: str, protocol: str) -> Config:
    return parse_config(f"""
service: {{log_level: warning}}
redis: {{url: "{redis_url}", block_ms: 100}}
http: {{enabled: false}}
mqtt:
  url: "{broker_url}"
  client_id: bench-fleet
  protocol: "{protocol}"
  qos: 1
  inflight: 1000
  subscriptions: ["{FILTER}"]
lanes: [{{name: low}}]
routes: [{{topic: "{FILTER}", class: doorbell.reading, key: topic.1}}]
classes:
  doorbell.reading: {{lane: low, actor: "bench.noop:NoOp", mode: queue, concurrency: 256}}
fleet:
  doorbell:
    classes: [doorbell.reading]
    interval_s: {INTERVAL_S}
    offline_after: {OFFLINE_AFTER}
    check_every_s: {CHECK_S}
""")


async def _switchyard(
    port: int, redis: EmbeddedRedis, devices: int, protocol: str
) -> dict[str, Any]:
    config = _config(redis.url, f"mqtt://127.0.0.1:{port}", protocol)
    registry = CollectorRegistry()
    labels = {"class": "doorbell.reading", "source": "mqtt"}

    def ingested() -> float:
        return registry.get_sample_value("switchyard_events_ingested_total", labels) or 0.0

    admin = Redis.from_url(redis.url)
    try:
        async with Service(config, registry=registry) as service:
            await _until(lambda: service.mqtt is not None and service.mqtt.connected)
            publishers = _publishers(port, devices)
            await _until(lambda: ingested() > 0)
            started, first = time.perf_counter(), ingested()
            await _until(lambda: ingested() >= devices, limit_s=600)
            elapsed = (time.perf_counter() - started) * devices / (devices - first + 1)
            last_report = time.time()
            due_by = last_report + OFFLINE_AFTER * INTERVAL_S
            await _join(publishers)
            due_bytes = await admin.memory_usage(keys.last_seen("doorbell"), samples=0) or 0
            offline = keys.offline("doorbell")
            while await admin.hlen(offline) < devices:
                if time.time() > due_by + 120:
                    raise TimeoutError("the silent devices were not all found")
                await asyncio.sleep(0.05)
            found_after = time.time() - due_by
    finally:
        await admin.aclose()
    return {"elapsed": elapsed, "due_bytes": due_bytes, "found_after_s": found_after}


async def run(devices: int, registered: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-fleet-mqtt-") as tmp:
        broker = EmbeddedBroker(Path(tmp) / "broker")
        redis = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        await broker.start()
        await redis.start()
        try:
            admin = Redis.from_url(redis.url)
            print(f"registering {registered:,} doorbells", file=sys.stderr, flush=True)
            await _register(admin, registered)
            await admin.aclose()
            port = broker.port or 0
            print(f"bare: {devices:,} readings", file=sys.stderr, flush=True)
            bare = await time_bare_subscriber(
                port, devices, broker.protocol, topics=FILTER,
                publish=lambda: _publishers(port, devices),
            )  # fmt: skip
            print("switchyard, fleet health on", file=sys.stderr, flush=True)
            measured = await _switchyard(port, redis, devices, broker.protocol)
        finally:
            await redis.stop()
            await broker.stop()
    return {
        "devices": devices,
        "registered": registered,
        "bare_subscriber_per_s": round(devices / bare),
        "switchyard_ingest_per_s": round(devices / measured["elapsed"]),
        "ratio": round(bare / measured["elapsed"], 3),
        "due_set_bytes_per_device": round(measured["due_bytes"] / devices, 1),
        "offline_found_after_due_s": round(measured["found_after_s"], 2),
        "check_every_s": CHECK_S,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet_mqtt", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--registered", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="10,000 devices, 100,000 registered")
    args = parser.parse_args(argv)
    devices, registered = (10_000, 100_000) if args.quick else (args.devices, args.registered)
    configure_logging("json", "warning")
    result = asyncio.run(run(devices, registered))
    print(json.dumps(result, indent=2))
    print(
        f"{devices:,} doorbells over MQTT ({registered:,} registered): ingest "
        f"{result['switchyard_ingest_per_s']:,}/s vs bare {result['bare_subscriber_per_s']:,}/s "
        f"(x{result['ratio']:.2f}); due set {result['due_set_bytes_per_device']} B/device; "
        f"all silent found {result['offline_found_after_due_s']} s after due "
        f"(checks every {CHECK_S:g} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
