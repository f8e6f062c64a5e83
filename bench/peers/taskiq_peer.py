# mypy: ignore-errors
"""taskiq with taskiq-redis: one worker process (one event loop, taskiq's receiver with its
default of 100 concurrent tasks), no result backend.

$BENCH_TASKIQ_BROKER picks the broker: `stream` (RedisStreamBroker: a consumer group, XACK per
message, at-least-once like Switchyard) or `list` (ListQueueBroker: LPUSH/BRPOP, no acks).
taskiq has no priorities on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from taskiq.api import run_receiver_task
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from bench.peers.common import URL, main, tally

CHUNK = 200

if os.environ.get("BENCH_TASKIQ_BROKER", "stream") == "list":
    broker = ListQueueBroker(URL, queue_name="bench")
else:  # consumer_id "0": the group also delivers what was enqueued before it was created
    broker = RedisStreamBroker(URL, queue_name="bench", consumer_id="0")


@broker.task(task_name="noop")
async def noop() -> None:
    tally.hit()


def fill(count: int) -> None:
    async def enqueue() -> None:
        await broker.startup()
        try:
            for start in range(0, count, CHUNK):
                await asyncio.gather(*(noop.kiq() for _ in range(min(CHUNK, count - start))))
        finally:
            await broker.shutdown()

    asyncio.run(enqueue())


def worker() -> None:
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        broker.is_worker_process = True
        await broker.startup()
        receiving = asyncio.create_task(run_receiver_task(broker, run_startup=False))
        await stop.wait()
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
        await broker.shutdown()

    asyncio.run(run())


if __name__ == "__main__":
    main(fill, worker)
