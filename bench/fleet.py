"""Fleet benchmark: what watching a million doorbells costs Redis, and how fast silence is found.

    .venv/bin/python -m bench.fleet [--devices 1000000] [--reporting 100000] [--quick]

One command starts a private redis-server and then, against it:

  registry   `--devices` doorbells registered (the registry hash, as `switchyard doorbell
             device add` writes it): Redis memory per device
  reports    every registered device reports once (Presence.seen, then flushes of 5,000):
             seconds, and the due set's memory per device
  steady     `--reporting` devices report again and flush, as a minute of a fleet reporting
             every 60 s would: seconds, against a bare ZADD of the same members (the floor)
  silence    `--devices` / 100 devices are made due, and one watch pass (the script that moves
             them to offline, and their announcements queued) finds them: seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from bench.harness import progress
from router.clock import SystemClock
from router.config import FleetConfig
from router.embedded.redis import EmbeddedRedis
from router.fleet.announce import Announcer
from router.fleet.presence import CHUNK, Presence
from router.fleet.watch import FleetWatch
from router.notify.device import Device
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import Sequence

FLEET = FleetConfig(classes=["doorbell.reading"], interval_s=60, offline_after=3)
PAGE = 10_000


async def _memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def _register(redis: Redis, devices: int) -> None:
    for start in range(0, devices, PAGE):
        page = {
            f"door-{n:07d}": Device(f"door-{n:07d}", f"owner-{n % 50_000}").to_json()
            for n in range(start, min(devices, start + PAGE))
        }
        await redis.hset(keys.devices("doorbell"), mapping=page)  # type: ignore[arg-type]


async def _report(presence: Presence, devices: range, at: float) -> float:
    started = time.perf_counter()
    for start in range(0, len(devices), CHUNK):
        for n in devices[start : start + CHUNK]:
            presence.seen("doorbell.reading", f"door-{n:07d}", at)
        await presence.flush()
    return time.perf_counter() - started


async def _bare(redis: Redis, devices: range, at: float) -> float:
    started = time.perf_counter()
    for start in range(0, len(devices), CHUNK):
        members = {f"door-{n:07d}": at for n in devices[start : start + CHUNK]}
        await redis.zadd("bench:bare", members, gt=True)
    return time.perf_counter() - started


async def bench(devices: int, reporting: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-fleet-") as temp:
        server = EmbeddedRedis(Path(temp) / "redis", appendonly=False)
        await server.start()
        redis = Redis.from_url(server.url)
        try:
            return await _measure(redis, devices, reporting)
        finally:
            await redis.aclose()
            await server.stop()


async def _measure(redis: Redis, devices: int, reporting: int) -> dict[str, Any]:
    fleets = {"doorbell": FLEET}
    announcer = Announcer(_drop)
    presence = Presence(redis, fleets, announcer)
    empty = await _memory(redis)
    progress(f"registering {devices:,} devices")
    await _register(redis, devices)
    registered = await _memory(redis)
    progress("every device reports once")
    now = time.time()
    first = await _report(presence, range(devices), now)
    reported = await _memory(redis)
    progress(f"{reporting:,} devices report again, and a bare ZADD of the same")
    steady = await _report(presence, range(reporting), now + 60)
    bare = await _bare(redis, range(reporting), now + 60)
    silent = devices // 100
    progress(f"{silent:,} devices fall silent; one watch pass")
    await redis.zadd(keys.last_seen("doorbell"), {f"door-{n:07d}": now - 1 for n in range(silent)})
    watch = FleetWatch(
        redis, fleets, presence, announcer, clock=SystemClock(), keeper=lambda name: True
    )
    started = time.perf_counter()
    found = 0
    while True:  # a pass takes PER_PASS at most: as many passes as it takes
        went = await watch.check()
        found += went
        if not went:
            break
    pass_s = time.perf_counter() - started
    return {
        "devices": devices,
        "reporting": reporting,
        "registry_bytes_per_device": (registered - empty) / devices,
        "due_set_bytes_per_device": (reported - registered) / devices,
        "first_reports_s": first,
        "steady_flush_s": steady,
        "bare_zadd_s": bare,
        "steady_vs_bare": steady / bare,
        "silent": silent,
        "found_offline": found,
        "watch_s": pass_s,
    }


async def _drop(messages: list[tuple[str, bytes]]) -> None:
    """Announcements go nowhere here: the bench measures finding them."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--reporting", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="100,000 devices, 10,000 reporting")
    args = parser.parse_args(argv)
    devices, reporting = (100_000, 10_000) if args.quick else (args.devices, args.reporting)
    result = asyncio.run(bench(devices, reporting))
    print(json.dumps(result, indent=2))
    print(
        f"{devices:,} devices: registry {result['registry_bytes_per_device']:.0f} B and due set "
        f"{result['due_set_bytes_per_device']:.0f} B per device; {reporting:,} reports flushed "
        f"in {result['steady_flush_s']:.2f} s (x{result['steady_vs_bare']:.2f} a bare ZADD); "
        f"{result['found_offline']:,} silent found in {result['watch_s']:.2f} s",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
