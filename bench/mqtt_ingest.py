"""MQTT ingest measured on the subscriber's side: the C publisher and an unthrottled broker.

    .venv/bin/python -m bench.mqtt_ingest [--messages 30000] [--runs 3] [--quick]

One command starts a private mosquitto (no persistence, no inflight or queue limits) and a
private redis-server, on free ports, and stops them at the end. Each scenario subscribes at
QoS 1, then `mosquitto_pub -l` (the C client) publishes `--messages` QoS 1 messages, one per
line; the subscriber is timed from its first message to its last, and the publisher's own
time is checked to be well under it (else the figure is the publisher's, and says so):

  bare             an aiomqtt subscriber that only counts (auto-ack)
  bare+xadd        the same, every message XADDed into a stream, pipelined a drained batch
                   at a time (auto-ack: paho acknowledges on receipt)
  bare+xadd+ack    the same with manual ack, each message acknowledged after its XADD: the
                   fair ceiling of an ingress that loses nothing
  switchyard       the Service's MQTT ingress (default settings, one class in a lane of its
                   own, its pool consuming in the same process), until `ingested` = N
  switchyard xK    K `switchyard run` processes (`--processes`, 1 and 2 by default), each
                   with its own MQTT session on one shared subscription ($share/bench/...),
                   writing into the same class; timed from the stream's first entry to its
                   Nth (entry ids are XADD times), CPU summed over the processes
Figures: messages/s, the subscribing processes' CPU per message, and each scenario as a
ratio to bare+xadd+ack in the same run (the target: Switchyard >= 0.8x).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bench.harness import child, group_cpu_seconds, listening, progress
from bench.mqtt_rate import FILTER, _config, _until
from bench.post_profile import per_event, print_stages
from router.embedded.process import free_port
from router.embedded.redis import EmbeddedRedis
from router.service.service import Service
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

TOPIC = "bench/d1/reading"
PAYLOAD = '{"device_id": "d1", "value": 21.5}'
BROKER_CONF = """listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 0
max_queued_bytes 0
set_tcp_nodelay true
"""
DRAIN = 500  # messages a bare writer takes at most per pipeline


@contextlib.asynccontextmanager
async def mosquitto(directory: Path) -> AsyncIterator[int]:
    port = free_port()
    (directory / "mosquitto.conf").write_text(BROKER_CONF.format(port=port))
    proc = await asyncio.create_subprocess_exec(
        "mosquitto", "-c", str(directory / "mosquitto.conf"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await listening(port, timeout_s=10)
        yield port
    finally:
        proc.terminate()
        await proc.wait()


async def publish(port: int, messages: int) -> float:
    """`mosquitto_pub -l` sending `messages` QoS 1 messages; its wall time."""
    lines = (PAYLOAD + "\n").encode() * messages
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-q", "1", "-l",
        "-M", "1000",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.communicate(lines)
    return time.perf_counter() - started


Counted = Callable[[], int]


async def timed(
    start: Callable[[], Awaitable[None]], count: Counted, port: int, messages: int
) -> dict[str, float]:
    """Publish, and time the subscriber from its first message to the `messages`th."""
    await start()
    cpu = time.process_time()
    sending = asyncio.create_task(publish(port, messages))
    await _until(lambda: count() > 0)
    began = time.perf_counter()
    await _until(lambda: count() >= messages)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    published = await sending
    return {"seconds": elapsed, "cpu_us": cpu / messages * 1e6, "publisher_s": published}


async def bare(port: int, messages: int, redis: Redis | None, manual: bool) -> dict[str, float]:
    """A bare aiomqtt subscriber; with `redis`, each drained batch XADDed in one pipeline
    (then, with `manual`, acknowledged)."""
    client = aiomqtt.Client("127.0.0.1", port, identifier=f"bare-{time.monotonic_ns()}")
    if manual:
        client._client.manual_ack_set(True)
    seen = [0]
    async with client:
        await client.subscribe(TOPIC, qos=1)
        queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

        async def receive() -> None:
            async for message in client.messages:
                if redis is None:
                    seen[0] += 1
                else:
                    queue.put_nowait(message)

        async def write() -> None:
            assert redis is not None
            while True:
                batch = [await queue.get()]
                await asyncio.sleep(0)  # one turn for paho to hand over what else arrived
                while not queue.empty() and len(batch) < DRAIN:
                    batch.append(queue.get_nowait())
                async with redis.pipeline(transaction=False) as pipe:
                    for message in batch:
                        pipe.xadd("bench:bare", {"p": bytes(message.payload)})
                    await pipe.execute()
                if manual:
                    for message in batch:
                        client._client.ack(message.mid, message.qos)
                seen[0] += len(batch)

        tasks = [asyncio.create_task(receive())]
        if redis is not None:
            tasks.append(asyncio.create_task(write()))
        try:

            async def started() -> None:
                return None

            return await timed(started, lambda: seen[0], port, messages)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def profiled(port: int, redis_url: str, messages: int) -> dict[str, Any]:
    """Switchyard's ingest under cProfile: its time per message, by stage."""
    profiler = cProfile.Profile()
    profiler.enable()
    await switchyard(port, redis_url, messages, 0)
    profiler.disable()
    return per_event(profiler, messages)


async def switchyard(port: int, redis_url: str, messages: int, run: int) -> dict[str, float]:
    config = _config(redis_url, f"mqtt://127.0.0.1:{port}", "5", f"bench-ingest-{run}")
    registry = CollectorRegistry()
    labels = {"class": "bench.reading", "source": "mqtt"}

    def ingested() -> int:
        return int(registry.get_sample_value("switchyard_events_ingested_total", labels) or 0)

    async with Service(config, registry=registry) as service:

        async def connected() -> None:
            await _until(lambda: service.mqtt is not None and service.mqtt.connected)

        return await timed(connected, ingested, port, messages)


async def processes(
    port: int, redis: Redis, redis_url: str, messages: int, *, count: int, logs: Path
) -> dict[str, float]:
    """`count` service processes on one shared subscription: their rate and CPU together."""
    async with contextlib.AsyncExitStack() as stack:
        children = []
        for number in range(count):
            http_port = free_port()
            config = logs / f"switchyard-{number}.yaml"
            config.write_text(_process_yaml(redis_url, port, http_port, number))
            children.append(await stack.enter_async_context(child(
                sys.executable, "-m", "router", "run", "--config", config,
                log=logs / f"switchyard-{number}.log", stdin=False, stdout=False,
            )))  # fmt: skip
            await _until_true(functools.partial(_ready, http_port), 60)
        cpu = sum(group_cpu_seconds(c.pid) for c in children)
        published = await publish(port, messages)
        stream = keys.stream("bench.reading")
        await _until_true(functools.partial(_added, redis, stream, messages), 120)
        cpu = sum(group_cpu_seconds(c.pid) for c in children) - cpu
        first: Any = await redis.xrange(stream, count=1)
        last: Any = await redis.xrevrange(stream, count=1)
    seconds = max(_id_ms(last[0][0]) - _id_ms(first[0][0]), 1) / 1000
    return {"seconds": seconds, "cpu_us": cpu / messages * 1e6, "publisher_s": published}


def _process_yaml(redis_url: str, broker_port: int, http_port: int, number: int) -> str:
    return f"""
service: {{log_level: warning}}
redis: {{url: "{redis_url}", block_ms: 100}}
http: {{port: {http_port}}}
mqtt:
  url: "mqtt://127.0.0.1:{broker_port}"
  client_id: bench-process-{number}
  protocol: "5"
  qos: 1
  inflight: 1000
  shared_group: bench
  subscriptions: ["{FILTER}"]
lanes: [{{name: low}}]
routes: [{{topic: "{FILTER}", class: bench.reading, key: device_id}}]
classes:
  bench.reading: {{lane: low, actor: "bench.noop:NoOp", mode: queue, concurrency: 256}}
"""


async def _ready(http_port: int) -> bool:
    """The process answers /readyz with 200: Redis reached and the broker subscribed."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    except OSError:
        return False
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status = await reader.readline()
    writer.close()
    return status.startswith(b"HTTP/1.1 200")


async def _added(redis: Redis, stream: str, messages: int) -> bool:
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError:  # not made yet
        return False
    return int(info["entries-added"]) >= messages


async def _until_true(condition: Callable[[], Awaitable[bool]], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark made no progress")
        await asyncio.sleep(0.01)


def _id_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


async def measure(
    messages: int, runs: int, process_counts: Sequence[int] = (1, 2)
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-mqtt-ingest-") as temp:
        redis_server = EmbeddedRedis(Path(temp) / "redis", appendonly=False)
        await redis_server.start()
        redis = Redis.from_url(redis_server.url)
        results: dict[str, list[dict[str, float]]] = {}
        try:
            async with mosquitto(Path(temp)) as port:
                for run in range(runs):
                    subscriber = functools.partial(bare, port, messages)
                    scenarios: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
                        ("bare", functools.partial(subscriber, None, manual=False)),
                        ("bare+xadd", functools.partial(subscriber, redis, manual=False)),
                        ("bare+xadd+ack", functools.partial(subscriber, redis, manual=True)),
                        ("switchyard", functools.partial(switchyard, port, redis_server.url,
                                                         messages, run)),
                    ]  # fmt: skip
                    several = functools.partial(
                        processes, port, redis, redis_server.url, messages, logs=Path(temp)
                    )
                    scenarios += [
                        (f"switchyard x{count}", functools.partial(several, count=count))
                        for count in process_counts
                    ]
                    for name, scenario in scenarios:
                        await redis.flushall()  # the private server this command started
                        figures = await scenario()
                        results.setdefault(name, []).append(figures)
                        progress(f"run {run + 1}/{runs} {name}: "
                                 f"{messages / figures['seconds']:,.0f}/s")  # fmt: skip
        finally:
            await redis.aclose()
            await redis_server.stop()
    return _summary(results, messages)


async def _profile(messages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-mqtt-ingest-") as temp:
        redis_server = EmbeddedRedis(Path(temp) / "redis", appendonly=False)
        await redis_server.start()
        try:
            async with mosquitto(Path(temp)) as port:
                return await profiled(port, redis_server.url, messages)
        finally:
            await redis_server.stop()


def _summary(results: dict[str, list[dict[str, float]]], messages: int) -> dict[str, Any]:
    summary: dict[str, Any] = {"messages": messages}
    for name, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        summary[name] = {
            "per_s": round(messages / seconds),
            "cpu_us_per_message": round(statistics.median(r["cpu_us"] for r in runs), 1),
            "publisher_share": round(
                statistics.median(r["publisher_s"] for r in runs) / seconds, 2
            ),
        }
    ceiling = summary["bare+xadd+ack"]["per_s"]
    for name in results:
        summary[name]["vs_manual_ack"] = round(summary[name]["per_s"] / ceiling, 3)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mqtt_ingest", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10,000 messages, 1 run")
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2],
                        help="service process counts to measure (default: 1 2)")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="instead: Switchyard's ingest under cProfile, by stage")  # fmt: skip
    args = parser.parse_args(argv)
    if not (shutil.which("mosquitto") and shutil.which("mosquitto_pub")):
        print("bench.mqtt_ingest needs mosquitto and mosquitto_pub (Debian: mosquitto, "
              "mosquitto-clients)")  # fmt: skip
        return 1
    messages, runs = (10_000, 1) if args.quick else (args.messages, args.runs)
    if args.profile:
        stages = asyncio.run(_profile(messages))
        print(f"{messages:,} messages: {stages['us_per_event']:.1f} us of this process per "
              "message under cProfile (the service's consuming pool included)")  # fmt: skip
        print_stages(stages)
        return 0
    summary = asyncio.run(measure(messages, runs, args.processes))
    print(json.dumps(summary, indent=2))
    for name in ("bare", "bare+xadd", "bare+xadd+ack", "switchyard",
                 *(f"switchyard x{count}" for count in args.processes)):  # fmt: skip
        s = summary[name]
        print(f"{name:14} {s['per_s']:>8,}/s  {s['cpu_us_per_message']:>6.1f} us CPU/message  "
              f"x{s['vs_manual_ack']:.2f} of bare+xadd+ack  (publisher took "
              f"{s['publisher_share']:.0%} of the subscriber's time)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
