# mypy: ignore-errors
"""arq: one worker process (one event loop), results not kept (`keep_result=0`), like the
other peers. With arq's defaults (`max_jobs=10`, `poll_delay=0.5 s`) a worker takes about 100
jobs per poll and then sleeps: about 200 jobs/s here. So it runs with max_jobs 100 and
poll_delay 5 ms ($BENCH_ARQ_MAX_JOBS and $BENCH_ARQ_POLL_DELAY override them); see
bench/README.md. arq has no priorities.
"""

from __future__ import annotations

import asyncio
import os

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

from bench.peers.common import URL, main, tally

MAX_JOBS = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "100"))
POLL_DELAY_S = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.005"))
CHUNK = 200


async def noop(ctx: dict) -> None:
    tally.hit()


def fill(count: int) -> None:
    async def enqueue() -> None:
        pool = await create_pool(RedisSettings.from_dsn(URL))
        try:
            for start in range(0, count, CHUNK):
                jobs = (pool.enqueue_job("noop") for _ in range(min(CHUNK, count - start)))
                await asyncio.gather(*jobs)
        finally:
            await pool.aclose()

    asyncio.run(enqueue())


def worker() -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())
    Worker(
        functions=[noop],
        redis_settings=RedisSettings.from_dsn(URL),
        max_jobs=MAX_JOBS,
        poll_delay=POLL_DELAY_S,
        keep_result=0,
        handle_signals=True,
    ).run()


if __name__ == "__main__":
    main(fill, worker)
