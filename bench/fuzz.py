"""Fuzz the service with hostile bodies and account for every good event.

    .venv/bin/python -m bench.fuzz [--bodies 12000] [--seed 7] [--json out.json]

One command starts a private redis-server and MQTT broker (free ports, a temp dir) and
`python -m router run` on the default config.yaml against them, then sends N bodies, half
over HTTP and half over MQTT, of three kinds in equal parts:
  good     events of the three workloads as their actors expect them, each marked `fuzz: good`
  hostile  the same events with one value of the wrong kind inside valid JSON (a boolean,
           a nested object, a huge number, a list where text belongs), or a good event
           batched with hostile neighbours
  garbage  bytes that are not JSON, arrays of scalars, deep nesting, empty arrays
Then it waits until the service is quiet and reads /metrics, the dead-letter streams and the
service's memory. The targets: 0 pool restarts, 0 good events in any dead-letter stream,
no HTTP answer 5xx, no traceback in the log, and peak RSS bounded (under 200 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import aiomqtt
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bench.harness import PROJECT_ROOT, child, rss_mb
from router.config import load_config
from router.embedded.broker import EmbeddedBroker
from router.embedded.process import free_port
from router.embedded.redis import EmbeddedRedis
from router.streams import keys
from router.streams.envelope import Envelope

if TYPE_CHECKING:
    from collections.abc import Callable

RSS_LIMIT_MB = 200.0
WRONG_KINDS: list[Any] = [True, False, {"nested": {"deep": [1]}}, 10**30, [1, 2], ["a"], None]


class Bodies:
    """Bodies of the three kinds, made from one seeded random source."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.good_sent = 0

    def good(self) -> tuple[str, dict[str, Any]]:
        maker: Callable[[], tuple[str, dict[str, Any]]] = self.random.choice(
            [self.music, self.music, self.doorbell, self.clinic]
        )
        topic, event = maker()
        return topic, {**event, "fuzz": "good"}

    def music(self) -> tuple[str, dict[str, Any]]:
        user = self.random.randint(1, 300)
        return f"music/{user}/events", {
            "user_id": user,
            "action": self.random.choice(["like_song", "skip_song", "change_song"]),
            "track": f"t{self.random.randint(1, 99)}",
            "artist": "Nina Simone",
            "genre": "jazz",
            "device": "phone",
        }

    def doorbell(self) -> tuple[str, dict[str, Any]]:
        device = f"door-{self.random.randint(1, 20)}"
        kind = self.random.choice(["motion_detected", "temperature", "video_upload"])
        event: dict[str, Any] = {"device_id": device}
        if kind == "motion_detected":
            event["confidence"] = round(self.random.random() * 0.8, 2)  # below the alert bar
        elif kind == "temperature":
            event["value"] = round(self.random.gauss(14, 5), 1)
        else:
            event |= {"clip_id": f"c{self.random.getrandbits(32):08x}", "duration_s": 9.5}
        return f"doorbell/{device}/{kind}", event

    def clinic(self) -> tuple[str, dict[str, Any]]:
        n = self.random.getrandbits(40)
        return "clinic/arrival", {
            "patient_id": f"f{n:x}",
            "name": f"Patient {n}",
            "birth_date": "1990-05-17",
            "temperature_c": 36.7,
        }

    def hostile(self) -> tuple[str, Any]:
        topic, event = self.good()
        if self.random.random() < 0.3:  # good events batched with hostile neighbours
            self.good_sent += 1
            bad = {k: v for k, v in event.items() if k != "fuzz"}
            bad[self.random.choice(list(bad))] = self.random.choice(WRONG_KINDS)
            return topic, [event, bad, self.random.choice([7, "text", None])]
        del event["fuzz"]
        event[self.random.choice(list(event))] = self.random.choice(WRONG_KINDS)
        return topic, event

    def garbage(self) -> tuple[str, Any]:
        topic, _ = self.good()
        return topic, self.random.choice(
            [b"\xc1 not json", b"[" * 5000, b"[]", [1, 2, 3], "just text", [[[]]], {"a": {}}]
        )

    def next(self) -> tuple[str, Any]:
        kind = self.random.choice([self.good, self.hostile, self.garbage])
        topic, body = kind()
        if kind == self.good:
            self.good_sent += 1
        return topic, body


def encoded(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def metrics(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` that carry `labels`."""
    wanted = set(labels.items())
    return sum(v for (sample, have), v in found.items() if sample == name and wanted <= have)


async def good_dead_letters(redis: Redis, classes: list[str]) -> int:
    """Dead letters, in any class, of events that were sent good (payload `fuzz: good`)."""
    count = 0
    for cls in classes:
        entries: Any = await redis.xrange(keys.dead_letters(cls))
        for _, fields in entries:
            envelope = Envelope.decode(fields[b"envelope"])
            count += isinstance(envelope.payload, dict) and envelope.payload.get("fuzz") == "good"
    return count


async def send_all(bodies: list[tuple[str, Any]], url: str, broker_port: int) -> int:
    """HTTP for the even bodies, MQTT (QoS 1) for the odd; returns HTTP 5xx answers."""
    server_errors = 0
    async with aiohttp.ClientSession() as http, aiomqtt.Client("127.0.0.1", broker_port) as mqtt:
        for index, (topic, body) in enumerate(bodies):
            data = encoded(body)
            if index % 2:
                await mqtt.publish(topic, data, qos=1)
                continue
            async with http.post(f"{url}/events/{topic}", data=data) as response:
                await response.read()
                server_errors += response.status >= 500
    return server_errors


async def quiet(http: aiohttp.ClientSession, url: str, still_s: float = 3.0) -> None:
    """Wait until the service has processed nothing new for `still_s` seconds."""
    last, still_since = -1.0, time.monotonic()
    while time.monotonic() - still_since < still_s:
        done = total(await metrics(http, url), "switchyard_events_processed_total")
        if done != last:
            last, still_since = done, time.monotonic()
        await asyncio.sleep(0.5)


async def run(count: int, seed: int) -> dict[str, Any]:
    maker = Bodies(seed)
    bodies = [maker.next() for _ in range(count)]
    with tempfile.TemporaryDirectory(prefix="sy-fuzz-") as tmp:
        root = Path(tmp)
        async with EmbeddedRedis(root / "redis", appendonly=False) as redis_server:
            broker = EmbeddedBroker(root / "mqtt")
            await broker.start()
            try:
                return await _measure(redis_server.url, broker, root, maker, bodies)
            finally:
                await broker.stop()


async def _measure(
    redis_url: str, broker: EmbeddedBroker, root: Path, maker: Bodies, bodies: list[tuple[str, Any]]
) -> dict[str, Any]:
    classes = list(load_config(PROJECT_ROOT / "config.yaml", environ={}).classes)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "SWITCHYARD_REDIS_URL": redis_url,
        "SWITCHYARD_MQTT_URL": broker.url,
        "SWITCHYARD_HTTP_PORT": str(port),
        "SWITCHYARD_LOG_FORMAT": "json",
        "SWITCHYARD_CLINIC_OBSERVATION_S": "1",
    }
    log = root / "service.log"
    async with (
        child(sys.executable, "-m", "router", "run", env=env, log=log, stdin=False) as proc,
        aiohttp.ClientSession() as http,
        Redis.from_url(redis_url) as redis,
    ):
        await _ready(http, url)
        start_rss = rss_mb(proc.pid)
        started = time.monotonic()
        server_errors = await send_all(bodies, url, broker.port or 0)
        sent_s = time.monotonic() - started
        await quiet(http, url)
        found = await metrics(http, url)
        good_dead = await good_dead_letters(redis, classes)
        rss = rss_mb(proc.pid)  # (now, peak)
        tracebacks = sum("Traceback" in line for line in log.read_text().splitlines())
    processed = "switchyard_events_processed_total"
    return {
        "bodies": len(bodies),
        "good_sent": maker.good_sent,
        "send_seconds": round(sent_s, 1),
        "http_5xx": server_errors,
        "pool_restarts": total(found, "switchyard_pool_restarts_total"),
        "processed_ok": total(found, processed, outcome="ok"),
        "dead_lettered": total(found, processed, outcome="dead"),
        "good_dead_lettered": good_dead,
        "kept_at_ingress": total(found, "switchyard_events_rejected_total"),
        "rss_start_mb": round(start_rss[0], 1) if start_rss else None,
        "rss_peak_mb": round(rss[1], 1) if rss else None,
        "log_tracebacks": tracebacks,
    }


async def _ready(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            async with http.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the service did not become ready")


def report(figures: dict[str, Any]) -> bool:
    targets = [
        ("0 pool restarts", figures["pool_restarts"] == 0),
        ("0 good events dead-lettered", figures["good_dead_lettered"] == 0),
        ("0 HTTP answers 5xx", figures["http_5xx"] == 0),
        (f"peak RSS <= {RSS_LIMIT_MB:g} MB", (figures["rss_peak_mb"] or 0) <= RSS_LIMIT_MB),
        ("no traceback in the log", figures["log_tracebacks"] == 0),
    ]
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    print()
    for name, met in targets:
        print(f"{'MET' if met else 'NOT MET':>8}  {name}")
    return all(met for _, met in targets)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--bodies", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = asyncio.run(run(args.bodies, args.seed))
    ok = report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
