"""Priority isolation: a high lane's latency while a low lane is flooded, in one Switchyard.

Two lanes (high; low with a `min_share`), a capped `service.capacity`, one class per lane. The
low class's stream is pre-filled with a backlog, and a separate process (bench.flood) keeps
appending to it as fast as it can for the whole experiment. Once that runs, another process
(bench.paced) POSTs single high-lane events at a fixed rate. The high class's actor
(bench.noop:Recorder) notes each event's ingest-to-handler-start time; the service's own
histograms (with fine buckets) give ingest-to-ack and send-to-ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from bench.harness import (
    Watch,
    all_counted,
    buckets,
    child,
    config_head,
    expect_ready,
    fill_stream,
    group_progress,
    loop_lag,
    percentiles,
    processed,
    progress,
    read_line,
    refine_latency,
    running,
    say,
    summarise_buckets,
)
from bench.noop import Recorder
from bench.throughput import GROUP
from router.config import Config, parse_config
from router.service.service import Service

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

HIGH, LOW = "bench.high", "bench.low"


@dataclass(frozen=True)
class PrioritySettings:
    backlog: int = 100_000  # low-lane entries pre-filled
    seconds: float = 20.0  # how long high-lane events arrive
    high_rate: float = 50.0  # high-lane events per second
    capacity: int = 64  # service.capacity: in-flight entries across classes
    low_min_share: float = 0.1
    high_concurrency: int = 16
    low_concurrency: int = 256  # more than the capacity: the scheduler is what limits it
    flood_rate: float = 0.0  # low-lane flood, events/s; 0: as fast as one process can
    high_target_ms: float = 10.0


def priority_config(url: str, s: PrioritySettings) -> Config:
    text = (
        config_head("bench-priority", url, GROUP, http=True, capacity=s.capacity)
        + f"""\
lanes:
  - name: high
  - name: low
    min_share: {s.low_min_share}
routes:
  - topic: bench/high/#
    class: {HIGH}
  - topic: bench/low/#
    class: {LOW}
classes:
  {HIGH}:
    lane: high
    actor: bench.noop:Recorder
    mode: queue
    concurrency: {s.high_concurrency}
    sla: {{target_ms: {s.high_target_ms}}}
  {LOW}:
    lane: low
    actor: bench.noop:NoOp
    mode: queue
    concurrency: {s.low_concurrency}
"""
    )
    return parse_config(text, "<bench-priority>", environ={})


async def run_switchyard(
    url: str, admin: Redis, s: PrioritySettings, logs: Path, *, flood: bool = True
) -> dict[str, Any]:
    """One experiment: the backlog, with or without the flood, and the high lane's events."""
    await admin.flushall()
    filled = await fill_stream(url, LOW, "low", s.backlog, topic="bench/low/backlog")
    progress(f"switchyard: {s.backlog:,} low-lane entries pre-filled in {filled:.1f} s"
             f"{', then a flood' if flood else ', no flood'}")  # fmt: skip
    registry = CollectorRegistry()
    service = Service(priority_config(url, s), registry=registry)
    refine_latency(service.metrics)
    async with running(service):
        result = await _experiment(
            url, admin, service, registry=registry, s=s, logs=logs, flood=flood
        )
    result["backlog_fill_seconds"] = round(filled, 2)
    return result


async def _experiment(
    url: str,
    admin: Redis,
    service: Service,
    *,
    registry: CollectorRegistry,
    s: PrioritySettings,
    logs: Path,
    flood: bool,
) -> dict[str, Any]:
    recorder = service.pools[HIGH].actor
    assert isinstance(recorder, Recorder)
    python = sys.executable
    async with contextlib.AsyncExitStack() as stack:
        flooder = None
        if flood:
            flooder = await stack.enter_async_context(child(
                python, "-m", "bench.flood", "--url", url, "--cls", LOW, "--lane", "low",
                "--rate", str(s.flood_rate), log=logs / "flood.log",
            ))  # fmt: skip
            await expect_ready(flooder, "flood")
        sender = await stack.enter_async_context(child(
            python, "-m", "bench.paced", "--url", f"http://127.0.0.1:{service.http_port}",
            "--topic", "bench/high/doorbell", "--rate", str(s.high_rate),
            "--seconds", str(s.seconds), "--connections", "4", log=logs / "paced-high.log",
        ))  # fmt: skip
        await expect_ready(sender, "high-lane sender")
        if flooder is not None:
            await say(flooder, "go")
        await asyncio.sleep(1.0)  # the flood and the backlog reach a steady state
        samples: list[dict[str, float]] = []
        sampler = asyncio.create_task(_sample(service, registry, samples))
        try:
            low_before = processed(registry, LOW)
            watch = Watch.start()
            async with loop_lag() as loop:
                await say(sender, "go")
                paced = json.loads(await read_line(sender, timeout_s=s.seconds + 60))
                await all_counted(
                    lambda: processed(registry, HIGH), paced["accepted"], "high events handled"
                )
            wall, cpu = watch.elapsed()
            low_after = processed(registry, LOW)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        flooded: dict[str, Any] = {"rate": 0, "events": 0}
        if flooder is not None:
            await say(flooder, "stop")
            flooded = json.loads(await read_line(flooder))
    processed_low, lag = await group_progress(admin, LOW, GROUP)
    high_ok = processed(registry, HIGH)
    per_second = _per_second(samples)
    min_slots = int(s.low_min_share * s.capacity)
    used_low = [sample["low_used"] for sample in samples]
    return {
        "settings": asdict(s),
        "high": {
            "sent": paced["sent"],
            "accepted": paced["accepted"],
            "handled": int(high_ok),
            "errors": paced["errors"],
            "ingest_to_handler_start": percentiles(recorder.waits),
            "send_to_handler_start": percentiles(recorder.source_waits),
            "ingest_to_ack": summarise_buckets(
                buckets(registry, "switchyard_event_latency_seconds", HIGH),
                s.high_target_ms / 1000,
            ),
            "send_to_ack": summarise_buckets(
                buckets(registry, "switchyard_source_latency_seconds", HIGH)
            ),
            "post_round_trip": paced["rtt"],
            "sender_late_max_ms": paced["late_max_ms"],
        },
        "low": {
            "per_s_during": round((low_after - low_before) / wall, 1),
            "min_per_s_in_any_second": min(per_second) if per_second else None,
            "share_of_processed": round(
                (low_after - low_before) / max(1.0, low_after - low_before + high_ok), 4
            ),
            "min_share": s.low_min_share,
            "min_slots": min_slots,
            "slots_used_min": min(used_low) if used_low else None,
            "samples_at_min_slots_or_more": round(
                sum(1 for used in used_low if used >= min_slots) / len(used_low), 4
            )
            if used_low
            else None,
            "slots_used_mean": round(sum(used_low) / len(used_low), 1) if used_low else None,
            "backlog_at_end": lag,
            "processed_total": processed_low,
        },
        "flood": flooded,
        "loop_lag": percentiles(loop.lags),
        "window_seconds": round(wall, 3),
        "service_cpu_share": round(cpu / wall, 3),
    }


async def _sample(
    service: Service, registry: CollectorRegistry, into: list[dict[str, float]]
) -> None:
    """Every 100 ms: the low lane's slots in use and its processed count."""
    started = time.perf_counter()
    while True:
        lanes = service.scheduler.snapshot()
        into.append(
            {
                "t": time.perf_counter() - started,
                "low_used": lanes["low"]["used"],
                "low_done": processed(registry, LOW),
            }
        )
        await asyncio.sleep(0.1)


def _per_second(samples: list[dict[str, float]]) -> list[float]:
    """The low lane's processed rate in each whole second of the window."""
    rates = []
    index = 0
    while index + 10 < len(samples):
        a, b = samples[index], samples[index + 10]
        rates.append(round((b["low_done"] - a["low_done"]) / (b["t"] - a["t"]), 1))
        index += 10
    return rates
