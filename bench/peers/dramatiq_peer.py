# mypy: ignore-errors
"""Dramatiq with its Redis broker: one worker process with 8 threads (Dramatiq's default).

Priorities (bench.peer_bench's priority experiment): one queue, two actors; the no-op one has
priority 10 and the high one priority 0 (lower is more urgent in Dramatiq). Dramatiq orders by
priority only among the messages a worker has prefetched (8 threads x 2), not in Redis.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.common import URL, main, record_high, tally, wait_for_sigterm

THREADS = 8

broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default", priority=10, max_retries=0)
def noop() -> None:
    tally.hit()


@dramatiq.actor(queue_name="default", priority=0, max_retries=0)
def high(sent: float) -> None:
    record_high(sent)


def fill(count: int) -> None:
    for _ in range(count):
        noop.send()


def worker() -> None:
    running = dramatiq.Worker(broker, worker_threads=THREADS)
    running.start()
    try:
        wait_for_sigterm()
    finally:
        running.stop(timeout=2000)


if __name__ == "__main__":
    main(fill, worker, high.send)
