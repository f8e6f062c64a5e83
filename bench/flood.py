"""A low-lane flood: one process appending envelopes to a class stream as fast as it can.

Direct Redis ingress, as a producer that writes Switchyard's wire format would: pipelines of
`--batch` XADDs of fresh envelopes, one pipeline after another (or paced at `--rate` events
per second). Run as its own process by bench.suite's priority experiment.

Protocol on stdin/stdout, one line each:
  child  -> "ready"          connected
  parent -> "go"             start; then "stop" or EOF ends the flood
  child  -> {json result}    events appended, seconds, rate
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from bench.harness import envelopes
from bench.loadgen import stdin_reader, tell_parent
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import Sequence


async def run(url: str, cls: str, lane: str, batch: int, rate: float) -> int:
    stdin = await stdin_reader()
    redis = Redis.from_url(url)
    stream = keys.stream(cls)
    try:
        await redis.ping()
        tell_parent("ready")
        if (await stdin.readline()).strip() != b"go":
            return 1
        stop = asyncio.Event()

        async def watch_stdin() -> None:
            await stdin.readline()  # "stop" or EOF
            stop.set()

        watcher = asyncio.create_task(watch_stdin())
        started, cpu = time.perf_counter(), time.process_time()
        sent = 0
        while not stop.is_set():
            async with redis.pipeline(transaction=False) as pipe:
                for data in envelopes(cls, lane, sent, batch, topic="bench/low/flood"):
                    pipe.xadd(stream, {keys.ENVELOPE_FIELD: data})
                await pipe.execute()
            sent += batch
            if rate > 0:
                ahead = started + sent / rate - time.perf_counter()
                if ahead > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), ahead)
            else:
                await asyncio.sleep(0)  # let the stdin watcher run
        seconds = time.perf_counter() - started
        watcher.cancel()
        tell_parent(
            json.dumps(
                {
                    "events": sent,
                    "seconds": round(seconds, 4),
                    "rate": round(sent / seconds, 1) if seconds else None,
                    "cpu_seconds": round(time.process_time() - cpu, 4),
                }
            )
        )
        return 0
    finally:
        await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="redis:// URL")
    parser.add_argument("--cls", required=True, help="the class whose stream is flooded")
    parser.add_argument("--lane", required=True)
    parser.add_argument("--batch", type=int, default=200, help="XADDs per pipeline")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0: as fast as it can")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args.url, args.cls, args.lane, args.batch, args.rate))
    return 130


if __name__ == "__main__":
    sys.exit(main())
