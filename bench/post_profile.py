"""Where a single-event POST's time goes: the service's own time per event, by stage.

    .venv/bin/python -m bench.post_profile [--rate 2000] [--seconds 5] [--batch 1] [--loop auto]
                                           [--unprofiled]

One command starts a private redis-server and a Service in this process (bench.latency's
config: one queue-mode class, a no-op actor), has bench.paced POST `--batch` event(s) per
request at `--rate` events/s for `--seconds` from a process of its own, and runs cProfile over
the service's loop meanwhile. Every function's own time (cProfile's tottime) is put in one
stage by where it lives (`STAGES`), and each stage is printed in microseconds per event and
as a share of the whole. cProfile roughly doubles the cost of Python code and barely that of
C code, so read the shares, not the absolute figures, and compare runs of the same command.
`--unprofiled` runs the same without cProfile and prints the service's real CPU per event
(user and system, from os.times) instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bench.harness import child, expect_ready, processed, progress, read_line, running, say
from bench.latency import LatencySettings, latency_config
from bench.throughput import CLASS
from router import loops
from router.embedded.redis import EmbeddedRedis
from router.service.service import Service

if TYPE_CHECKING:
    from collections.abc import Sequence

# (stage, what a function's file path contains), first match wins; the rest is "other".
IDLE = "waiting for the network (epoll): not work"
STAGES = (
    (IDLE, ("select.epoll", "uvloop.loop.Loop.run")),
    ("metrics", ("prometheus_client",)),
    ("logging", ("structlog",)),
    ("HTTP: aiohttp's server, parse and respond", ("aiohttp/",)),
    ("HTTP: Switchyard's listener, parse and respond", ("router/ingress/listener", "httptools")),
    ("HTTP: Switchyard's handler (the events endpoint)", ("router/ingress/http",)),
    ("MQTT client: paho and aiomqtt", ("paho/", "aiomqtt/")),
    ("MQTT: Switchyard's ingress (batching, manual acks)", ("router/ingress/mqtt",)),
    ("system calls: socket send and receive", ("_socket.socket",)),
    ("body decode", ("router/ingress/decode", "orjson", "json/")),
    ("ingest and routing", ("router/ingress/ingest", "router/ingress/shedding", "router/routing")),
    ("envelope packing", ("router/streams/envelope", "msgpack")),
    ("write: batching and the XADD script", ("router/ingress/writer", "router/streams/redis")),
    ("Redis client: commands packed, replies parsed", ("redis/", "hiredis", "router/streams/line")),
    ("read: XREADGROUP and hand-off", ("router/runtime/reader", "router/runtime/handoff",
                                       "router/runtime/slots", "router/runtime/scheduler")),
    ("dispatch and handling", ("router/runtime/dispatch", "router/runtime/handling",
                               "router/runtime/context", "bench/noop", "router/runtime/pool")),
    ("settle: XACK and accounting", ("router/runtime/settle", "router/runtime/accounting",
                                     "router/runtime/policies", "router/metrics")),
    ("event loop and asyncio: tasks, handles, timers", ("asyncio/", "selectors", "uvloop",
                                                        "_asyncio", "_contextvars")),
    ("Python builtins", ("builtins.", "~:<method")),
)  # fmt: skip


def stage_of(path: str, name: str) -> str:
    where = f"{path}:{name}"
    for stage, marks in STAGES:
        if any(mark in where for mark in marks):
            return stage
    return "other"


def per_event(profiler: cProfile.Profile, events: float) -> dict[str, Any]:
    """The profile's own time per event and share, by stage (waiting left out)."""
    totals = by_stage(pstats.Stats(profiler))
    totals.pop(IDLE, None)
    whole = sum(totals.values())
    stages = {
        stage: {"us_per_event": round(own / events * 1e6, 2), "share": round(own / whole, 3)}
        for stage, own in sorted(totals.items(), key=lambda item: -item[1])
    }
    return {"us_per_event": round(whole / events * 1e6, 2), "stages": stages}


def print_stages(result: dict[str, Any]) -> None:
    for stage, figures in result["stages"].items():
        print(f"  {figures['us_per_event']:8.1f} us  {figures['share']:6.1%}  {stage}")


def by_stage(stats: pstats.Stats) -> dict[str, float]:
    """Own time (seconds) per stage."""
    totals: dict[str, float] = {}
    for (path, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        own = row[2]
        stage = stage_of(path, name)
        totals[stage] = totals.get(stage, 0.0) + own
    return totals


async def measure(rate: float, seconds: float, batch: int, profiled: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-post-") as temp:
        server = EmbeddedRedis(Path(temp) / "redis", appendonly=False)
        await server.start()
        admin = Redis.from_url(server.url)
        try:
            settings = LatencySettings(rate=rate, seconds=seconds)
            config = latency_config(server.url, settings)
            registry = CollectorRegistry()
            async with running(Service(config, registry=registry, http_port=0)) as service:
                return await _profiled(
                    service, registry, settings, batch, Path(temp), profiled=profiled
                )
        finally:
            await admin.aclose()
            await server.stop()


async def _profiled(
    service: Service,
    registry: CollectorRegistry,
    s: LatencySettings,
    batch: int,
    logs: Path,
    *,
    profiled: bool,
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{service.http_port}"
    async with child(
        sys.executable, "-m", "bench.paced", "--url", base, "--rate", str(s.rate),
        "--seconds", str(s.seconds), "--connections", str(s.connections), "--batch", str(batch),
        log=logs / "paced.log",
    ) as sender:  # fmt: skip
        await expect_ready(sender, "paced sender")
        profiler = cProfile.Profile()
        before, times = processed(registry, CLASS), os.times()
        if profiled:
            profiler.enable()
        await say(sender, "go")
        sent: dict[str, Any] = json.loads(await read_line(sender, timeout_s=s.seconds + 60))
        profiler.disable()
        after = os.times()
    events = processed(registry, CLASS) - before
    result = {"events": events, "batch": batch, "sent": sent.get("sent")}
    if not profiled:
        user, system = after.user - times.user, after.system - times.system
        return {**result, "cpu_us_per_event": round((user + system) / events * 1e6, 1),
                "user_us_per_event": round(user / events * 1e6, 1),
                "system_us_per_event": round(system / events * 1e6, 1)}  # fmt: skip
    return {**result, **per_event(profiler, events)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.post_profile", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--rate", type=float, default=2_000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=1, help="events per POST")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--unprofiled", action="store_true",
                        help="no cProfile: the service's real CPU per event")  # fmt: skip
    args = parser.parse_args(argv)
    measuring = measure(args.rate, args.seconds, args.batch, profiled=not args.unprofiled)
    result = loops.run(measuring, loops.factory(args.loop))
    print(json.dumps(result, indent=2))
    progress("")
    if args.unprofiled:
        user, system = result["user_us_per_event"], result["system_us_per_event"]
        print(f"{result['events']:,.0f} events, {args.batch} per POST, at {args.rate:,.0f}/s: "
              f"{result['cpu_us_per_event']:.1f} us of the service's CPU per event (user "
              f"{user:.1f}, system {system:.1f})")  # fmt: skip
        return 0
    print(
        f"{result['events']:,.0f} events, {args.batch} per POST, at {args.rate:,.0f}/s: "
        f"{result['us_per_event']:.1f} us of the service's time per event under cProfile"
    )
    print_stages(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
