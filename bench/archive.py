"""Archive benchmark: music interactions into the lake, against the same events into a no-op
class, end to end over HTTP in the same run.

    .venv/bin/python -m bench.archive [--events 100000] [--runs 3] [--quick]

One command starts a private redis-server (append-only off, on a free port), then runs each
scenario `--runs` times, interleaved, and prints medians:

  noop     the music events (bench.loadgen's, posted as JSON arrays of 500 to
           /events/music/1/events by a load generator in its own process) routed to one
           queue-mode class with a no-op actor; "go" to the last event processed
  archive  the same events through the default config's music path: music.interactions, a
           batch class whose actor writes Parquet segments to a lake in a temp directory (a roll
           every 10,000 rows or 1 s), in a lane with a worker process of its own as in the
           default config (`--no-worker`: in the service's process); "go" to the last row in
           the lake

The ratio archive/noop is the figure (goal >= 0.8); bytes per interaction in the lake too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from bench.harness import (
    BenchError,
    child,
    config_head,
    expect_ready,
    progress,
    running,
    say,
)
from bench.scale import processed as acknowledged
from router.config import parse_config
from router.embedded.redis import EmbeddedRedis
from router.service.service import Service

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.config import Config
    from router.streams.client import RedisClient

TOPIC = "music/1/events"
ACTIONS = "[like_song, skip_song, change_song, add_to_playlist]"  # what bench.loadgen sends
STALL_S = 30.0


def noop_config(url: str) -> Config:
    text = (
        config_head("bench", url, "switchyard", http=True)
        + f"""\
lanes: [{{name: bench}}]
routes:
  - {{topic: "music/+/events", match: {{action: {{in: {ACTIONS}}}}}, class: bench, key: user_id}}
classes:
  bench: {{lane: bench, actor: "bench.noop:NoOp", mode: queue, concurrency: 256}}
"""
    )
    return parse_config(text, "<bench>", environ={})


def archive_config(url: str, lake: Path, workers: int) -> Config:
    text = (
        config_head("bench", url, "switchyard", http=True)
        + f"""\
lanes: [{{name: archive, workers: {workers}}}]
routes:
  - {{topic: "music/+/events", match: {{action: {{in: {ACTIONS}}}}}, class: music.interactions}}
classes:
  music.interactions:
    lane: archive
    actor: "actors.music:LakeArchiver"
    mode: batch
    concurrency: 2
    batch: {{max_size: 10000, max_wait_ms: 1000}}
    options: {{lake: "{lake}"}}
"""
    )
    return parse_config(text, "<bench>", environ={})


async def one_run(config: Config, done_class: str, events: int) -> float:
    """Seconds from "go" to `events` processed by `done_class`, HTTP load from another process."""
    registry = CollectorRegistry()
    async with running(Service(config, registry=registry)) as service:
        command = (
            sys.executable, "-m", "bench.loadgen", "--url", f"http://127.0.0.1:{service.http_port}",
            "--topic", TOPIC, "--events", str(events), "--batch", "500", "--connections", "8",
        )  # fmt: skip
        async with child(*command) as generator:
            await expect_ready(generator, "load generator")
            started = time.perf_counter()
            await say(generator, "go")
            await _until_processed(service.transport.redis, done_class, events)
            return time.perf_counter() - started


async def _until_processed(client: RedisClient, cls: str, events: int) -> None:
    """Until the class's group acknowledged `events` (read from Redis: a lane worker's
    counters are not this process's)."""
    last, changed = -1.0, time.perf_counter()
    while (done := await acknowledged(client, [cls])) < events:
        now = time.perf_counter()
        if done != last:
            last, changed = done, now
        elif now - changed > STALL_S:
            raise BenchError(f"no progress for {STALL_S:.0f} s at {done:.0f}/{events} of {cls}")
        await asyncio.sleep(0.02)


async def bench(events: int, runs: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-archive-") as temp:
        root = Path(temp)
        redis = EmbeddedRedis(root / "redis", appendonly=False)
        await redis.start()
        rates: dict[str, list[float]] = {"noop": [], "archive": []}
        lake_bytes = 0
        try:
            for run in range(runs):
                for name in ("noop", "archive"):
                    await _flush(redis.url)
                    lake = root / f"lake-{run}"
                    config, done = (
                        (noop_config(redis.url), "bench")
                        if name == "noop"
                        else (archive_config(redis.url, lake, workers), "music.interactions")
                    )
                    seconds = await one_run(config, done, events)
                    rates[name].append(events / seconds)
                    progress(f"  run {run + 1}/{runs} {name}: {events / seconds:,.0f} events/s")
                    if name == "archive":
                        lake_bytes = sum(p.stat().st_size for p in lake.rglob("*.parquet"))
        finally:
            await redis.stop()
    noop, archive = statistics.median(rates["noop"]), statistics.median(rates["archive"])
    return {
        "events": events,
        "runs": runs,
        "noop_rate": noop,
        "archive_rate": archive,
        "ratio": archive / noop,
        "archive_workers": workers,
        "bytes_per_interaction": lake_bytes / events,
    }


async def _flush(url: str) -> None:
    from redis.asyncio import Redis  # noqa: PLC0415 - only the parent talks to Redis

    async with Redis.from_url(url) as admin:
        await admin.flushall()  # our own private server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.archive", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 events, 1 run")
    parser.add_argument("--no-worker", action="store_true", help="archive in the service process")
    args = parser.parse_args(argv)
    events, runs = (20_000, 1) if args.quick else (args.events, args.runs)
    try:
        result = asyncio.run(bench(events, runs, 0 if args.no_worker else 1))
    except BenchError as exc:
        print(f"bench.archive: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    print(
        f"archive {result['archive_rate']:,.0f} events/s vs no-op {result['noop_rate']:,.0f}: "
        f"x{result['ratio']:.2f}; {result['bytes_per_interaction']:.1f} bytes per interaction"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
