"""End-to-end latency at a steady rate: e.g. 2,000 events/s POSTed for 10 s, ingest to ack.

Switchyard: a Service in this process (one queue-mode class, bench.noop:Recorder, an SLA
target equal to the latency target so its breach counter counts misses exactly, latency
histograms with 0.1 ms buckets); a separate process (bench.paced) POSTs on a fixed schedule,
once with one event per POST (2,000 requests/s) and once with small batches. A first second is
a warm-up and is subtracted from every figure.

The floor on this machine: a bare redis.asyncio loop in one process, paced the same way: XADD
one entry at a time on schedule; a consumer does XREADGROUP (BLOCK) and one XACK per read;
timed from just before the XADD to the XACK's reply, like Switchyard's ingest to ack.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import aiohttp
import msgpack
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bench.bare_http import run_bare_http
from bench.harness import (
    Entries,
    Watch,
    all_counted,
    bare_consume,
    bucket_delta,
    buckets,
    checkpoint,
    child,
    config_head,
    expect_ready,
    loop_lag,
    percentiles,
    progress,
    read_line,
    refine_latency,
    running,
    say,
    share_within,
    stall_watch,
    summarise_buckets,
    to_the_end,
)
from bench.loadgen import make_event
from bench.noop import Recorder
from bench.throughput import CLASS, GROUP
from router.config import Config, HttpConfig, parse_config
from router.ops.exposition import parse
from router.service.service import Service
from router.streams import keys
from router.streams.envelope import Envelope

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from prometheus_client.metrics_core import Metric

BARE_STREAM = "bench:{bare-latency}:stream"
ACK = "switchyard_event_latency_seconds"
SOURCE = "switchyard_source_latency_seconds"
ACKNOWLEDGED = "events acknowledged"


@dataclass(frozen=True)
class LatencySettings:
    rate: float = 2_000.0  # events per second
    seconds: float = 10.0
    warmup_seconds: float = 1.0
    batches: tuple[int, ...] = (1, 10)  # events per POST, one run each
    worker_batches: tuple[int, ...] = (1, 10)  # again, with the lane in a worker process
    connections: int = 64  # so the sender's own queue for a connection stays out of the way
    concurrency: int = 256
    target_ms: float = 2.0
    fast_rate: float = 5_000.0  # one event per POST at this rate too: reported, with a goal
    fast_target_ms: float = 5.0


def latency_config(url: str, s: LatencySettings) -> Config:
    text = (
        config_head("bench-latency", url, GROUP, http=True)
        + f"""\
lanes:
  - name: bench
routes:
  - topic: bench/#
    class: {CLASS}
classes:
  {CLASS}:
    lane: bench
    actor: bench.noop:Recorder
    mode: queue
    concurrency: {s.concurrency}
    sla: {{target_ms: {s.target_ms}}}
"""
    )
    return parse_config(text, "<bench-latency>", environ={})


async def run_latency(url: str, admin: Redis, s: LatencySettings, logs: Path) -> dict[str, Any]:
    await admin.flushall()
    bare = await run_bare(url, s.rate, s.seconds, s.target_ms / 1000, logs)
    progress(f"bare loop paced at {s.rate:,.0f}/s: p50 {bare['latency'].get('p50_ms')} ms, "
             f"p99 {bare['latency'].get('p99_ms')} ms")  # fmt: skip
    slow_bare = None
    if (biggest := max(s.batches)) > 1:  # the bare loop as the biggest POSTs arrive
        await admin.flushall()
        slow_bare = await run_bare(url, s.rate / biggest, s.seconds, s.target_ms / 1000, logs)
    await admin.flushall()
    bare_http = await _run_bare_http(url, s, logs)
    handwritten = bare_http["latency"]
    progress(f"hand-written HTTP loop, 1 event per POST: p50 {handwritten.get('p50_ms')} ms, "
             f"p99 {handwritten.get('p99_ms')} ms")  # fmt: skip
    await admin.flushall()
    direct = await run_direct(url, s, logs)
    ack = direct["ingest_to_ack"]
    progress(f"switchyard, direct redis ingress: ingest->ack p50 {ack.get('p50_ms')} ms, "
             f"p99 {ack.get('p99_ms')} ms")  # fmt: skip
    runs = []
    fast = replace(s, rate=s.fast_rate, target_ms=s.fast_target_ms)
    plan = [(run_switchyard, s, b, "") for b in s.batches]
    plan += [(run_with_worker, s, b, ", lane in a worker process") for b in s.worker_batches]
    plan += [(run_switchyard, fast, 1, f" at {s.fast_rate:,.0f}/s")] if s.fast_rate else []
    for runner, settings, batch, where in plan:
        checkpoint()
        await admin.flushall()
        runs.append(await runner(url, settings, batch, logs))
        ack = runs[-1]["ingest_to_ack"]
        progress(f"switchyard, {batch} event(s) per POST{where}: ingest->ack p50 "
                 f"{ack.get('p50_ms')} ms, p99 {ack.get('p99_ms')} ms")  # fmt: skip
    return {"settings": asdict(s), "bare": bare, "bare_at_post_pace": slow_bare,
            "bare_http": bare_http, "direct": direct, "switchyard": runs}  # fmt: skip


async def _run_bare_http(url: str, s: LatencySettings, logs: Path) -> dict[str, Any]:
    """The hand-written HTTP service, one event per POST, paced like Switchyard's runs."""

    async def send(base: str, seconds: float) -> dict[str, Any]:
        return await post_paced(base, s, seconds, 1, logs)

    return await run_bare_http(
        url,
        send=send,
        warmup_s=s.warmup_seconds,
        seconds=s.seconds,
        target_s=s.target_ms / 1000,
        logs=logs,
    )


async def run_with_worker(url: str, s: LatencySettings, batch: int, logs: Path) -> dict[str, Any]:
    """The HTTP run with `workers: 1` on the lane: the service process takes the POSTs, a
    worker process runs the pool. The worker's histograms reach us through the service's
    merged /metrics (stock buckets plus the 2 ms target, so the share within it is exact);
    its handler-start waits stay in its own process."""
    config = latency_config(url, s)
    lane = config.lanes[0].model_copy(update={"workers": 1})
    service = Service(config.model_copy(update={"lanes": [lane]}))
    async with running(service), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.http_port}"

        async def acknowledged() -> float:  # the worker's histograms, through /metrics
            return _acknowledged(await _scraped(http, base))

        warm = await _warm_up(base, s, batch, logs, acknowledged)
        before = await _scraped(http, base)
        async with stall_watch(logs) as stalls:
            watch = Watch.start()
            paced = await post_paced(base, s, s.seconds, batch, logs)
            wall, cpu = watch.elapsed()
            stolen = watch.stolen_share()
        await all_counted(acknowledged, warm + paced["accepted"], ACKNOWLEDGED)
        after = await _scraped(http, base)
    ack = bucket_delta(buckets(after, ACK, CLASS), buckets(before, ACK, CLASS))
    return {
        "events_per_post": batch,
        "rate": s.rate,
        "target_ms": s.target_ms,
        "lane_workers": 1,
        "posts_per_s": round(s.rate / batch, 1),
        "sent": paced["sent"],
        "accepted": paced["accepted"],
        "errors": paced["errors"],
        "ingest_to_ack": summarise_buckets(ack, s.target_ms / 1000),
        "send_to_ack": summarise_buckets(
            bucket_delta(buckets(after, SOURCE, CLASS), buckets(before, SOURCE, CLASS))
        ),
        "post_round_trip": paced["rtt"],
        "sender_busiest_5ms": paced["busiest_5ms"],
        "stolen_share": stolen,
        "stalls": stalls,
        "service_cpu_share": round(cpu / wall, 3),
        "sender_cpu_share": round(paced["cpu_seconds"] / wall, 3),
    }


async def _scraped(http: aiohttp.ClientSession, base: str) -> CollectorRegistry:
    """The service's /metrics, as a registry to read histograms from."""
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    registry = CollectorRegistry()
    registry.register(Scraped(parse(text)))
    return registry


class Scraped:
    """Metric families read off a /metrics page, served again to a registry."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def run_direct(url: str, s: LatencySettings, logs: Path) -> dict[str, Any]:
    """Direct Redis ingress, paced like the bare loop: a producer in this process XADDs one
    envelope at a time, stamped just before its XADD, into the class stream the Service reads."""
    registry = CollectorRegistry()
    config = latency_config(url, s).model_copy(update={"http": HttpConfig(enabled=False)})
    service = Service(config, registry=registry)
    refine_latency(service.metrics)
    producer = Redis.from_url(url)
    try:
        async with running(service):
            recorder = service.pools[CLASS].actor
            assert isinstance(recorder, Recorder)
            warm, events = int(s.rate * s.warmup_seconds), int(s.rate * s.seconds)
            await _produce_envelopes(producer, s.rate, warm)
            await all_counted(lambda: _acknowledged(registry), warm, ACKNOWLEDGED)
            recorder.waits.clear()
            before = buckets(registry, ACK, CLASS)
            async with stall_watch(logs) as stalls, loop_lag() as loop:
                watch = Watch.start()
                late = await _produce_envelopes(producer, s.rate, events)
                wall, cpu = watch.elapsed()
                await all_counted(lambda: _acknowledged(registry), warm + events, ACKNOWLEDGED)
            ack = bucket_delta(buckets(registry, ACK, CLASS), before)
            waits = list(recorder.waits)
    finally:
        await to_the_end(producer.aclose())
    return {
        "events": events,
        "producer_late_max_ms": round(late * 1000, 3),
        "ingest_to_handler_start": percentiles(waits),
        "ingest_to_ack": summarise_buckets(ack, s.target_ms / 1000),
        "loop_lag": percentiles(loop.lags),
        "stalls": stalls,
        "cpu_share": round(cpu / wall, 3),
    }


async def _produce_envelopes(producer: Redis, rate: float, total: int) -> float:
    """XADD `total` envelopes one at a time on schedule; returns how late the producer fell at
    most."""
    stream, late = keys.stream(CLASS), 0.0
    started = time.perf_counter()
    for seq in range(total):
        checkpoint()
        delay = started + seq / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        envelope = Envelope(f"direct-{seq}", CLASS, "bench", make_event(seq), ingest_ts=time.time())
        await producer.xadd(stream, {keys.ENVELOPE_FIELD: envelope.encode()})
    return late


async def run_switchyard(url: str, s: LatencySettings, batch: int, logs: Path) -> dict[str, Any]:
    registry = CollectorRegistry()
    service = Service(latency_config(url, s), registry=registry)
    refine_latency(service.metrics)
    async with running(service):
        recorder = service.pools[CLASS].actor
        assert isinstance(recorder, Recorder)
        base = f"http://127.0.0.1:{service.http_port}"
        warm = await _warm_up(base, s, batch, logs, lambda: _acknowledged(registry))
        recorder.waits.clear()
        recorder.source_waits.clear()
        before = {name: buckets(registry, name, CLASS) for name in (ACK, SOURCE)}
        breaches_before = _breaches(registry)
        async with stall_watch(logs) as stalls, loop_lag() as loop:
            watch = Watch.start()
            paced = await post_paced(base, s, s.seconds, batch, logs)
            wall, cpu = watch.elapsed()
            stolen = watch.stolen_share()
            await all_counted(
                lambda: _acknowledged(registry), warm + paced["accepted"], ACKNOWLEDGED
            )
        ack = bucket_delta(buckets(registry, ACK, CLASS), before[ACK])
        source = bucket_delta(buckets(registry, SOURCE, CLASS), before[SOURCE])
        breaches = _breaches(registry) - breaches_before
        waits, source_waits = list(recorder.waits), list(recorder.source_waits)
    ack_summary = summarise_buckets(ack, s.target_ms / 1000)
    ack_summary["over_target"] = int(breaches)
    return {
        "events_per_post": batch,
        "rate": s.rate,
        "target_ms": s.target_ms,
        "posts_per_s": round(s.rate / batch, 1),
        "sent": paced["sent"],
        "accepted": paced["accepted"],
        "errors": paced["errors"],
        "offered_rate": paced["offered_rate"],
        "sender_late_max_ms": paced["late_max_ms"],
        "sender_busiest_5ms": paced["busiest_5ms"],
        "stolen_share": stolen,
        "ingest_to_handler_start": percentiles(waits),
        "send_to_handler_start": percentiles(source_waits),
        "ingest_to_ack": ack_summary,
        "send_to_ack": summarise_buckets(source),
        "post_round_trip": paced["rtt"],
        "loop_lag": percentiles(loop.lags),
        "stalls": stalls,
        "service_cpu_share": round(cpu / wall, 3),
        "sender_cpu_share": round(paced["cpu_seconds"] / wall, 3),
    }


async def _warm_up(
    base: str,
    s: LatencySettings,
    batch: int,
    logs: Path,
    acknowledged: Callable[[], float] | Callable[[], Awaitable[float]],
) -> int:
    """The warm-up's POSTs, each of its events acknowledged; returns how many it had."""
    if s.warmup_seconds <= 0:
        return 0
    accepted: int = (await post_paced(base, s, s.warmup_seconds, batch, logs))["accepted"]
    await all_counted(acknowledged, accepted, ACKNOWLEDGED)
    return accepted


def _acknowledged(registry: CollectorRegistry) -> float:
    """How many events the service acknowledged so far, warm-up included."""
    counts = buckets(registry, ACK, CLASS)
    return counts[-1][1] if counts else 0.0  # the +Inf bucket: every observation


def _breaches(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("switchyard_sla_breaches_total", {"class": CLASS}) or 0.0


async def post_paced(
    base: str, s: LatencySettings, seconds: float, batch: int, logs: Path
) -> dict[str, Any]:
    """`bench.paced` from its own process: `batch` events per POST at `s.rate` events/s to
    `base` for `seconds`; its result line."""
    async with child(
        sys.executable, "-m", "bench.paced", "--url", base, "--rate", str(s.rate),
        "--seconds", str(seconds), "--connections", str(s.connections), "--batch", str(batch),
        log=logs / "paced-latency.log",
    ) as sender:  # fmt: skip
        await expect_ready(sender, "paced sender")
        await say(sender, "go")
        result: dict[str, Any] = json.loads(await read_line(sender, timeout_s=seconds + 60))
    return result


async def run_bare(
    url: str, rate: float, seconds: float, target_s: float, logs: Path
) -> dict[str, Any]:
    """The bare loop, paced: XADD on schedule; XREADGROUP + one XACK per read; XADD to ack."""
    total = max(1, int(rate * seconds))
    producer, consumer = Redis.from_url(url), Redis.from_url(url)
    latencies: list[float] = []
    late = [0.0]
    try:
        await consumer.xgroup_create(BARE_STREAM, GROUP, id="0", mkstream=True)
        await producer.ping()

        async def produce() -> None:
            started = time.perf_counter()
            for seq in range(total):
                checkpoint()
                delay = started + seq / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late[0] = max(late[0], -delay)
                fields = {"e": msgpack.packb(make_event(seq)), "t": repr(time.perf_counter())}
                await producer.xadd(BARE_STREAM, fields)  # type: ignore[arg-type]

        def acked(entries: Entries) -> None:
            now = time.perf_counter()
            latencies.extend(now - float(fields[b"t"]) for _, fields in entries)

        async with stall_watch(logs) as stalls:
            watch = Watch.start()
            async with asyncio.timeout(seconds + 30), asyncio.TaskGroup() as group:
                group.create_task(produce())
                consume = bare_consume(consumer, BARE_STREAM, GROUP, total, on_acked=acked)
                group.create_task(consume)
            wall, cpu = watch.elapsed()
            stolen = watch.stolen_share()
    finally:
        await to_the_end(producer.aclose())
        await to_the_end(consumer.aclose())
    return {
        "rate": rate,
        "events": total,
        "latency": percentiles(latencies),
        "share_within": share_within(latencies, target_s),
        "late_max_ms": round(late[0] * 1000, 3),
        "cpu_share": round(cpu / wall, 3),
        "stolen_share": stolen,
        "stalls": stalls,
    }
