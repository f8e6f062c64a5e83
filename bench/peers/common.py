"""What every peer script shares: the Redis URL, the completion counter, the roles' command line.

Runs under bench/.peers-venv (which has redis-py, like the project's venv), so it imports
nothing from the project and nothing from the peers themselves.

Each peer script is started by bench.peer_bench as `python -m bench.peers.<name> ROLE`, with
the private Redis in $BENCH_REDIS_URL and $BENCH_PEER_PRIORITY=1 for the priority experiment:
  fill --count N      enqueue N no-op tasks (low priority when priority is on); prints JSON
  worker              one worker process, until SIGTERM
  paced --rate R --seconds S
                      enqueue high-priority tasks at R per second, each carrying its enqueue
                      time; prints JSON
A no-op task calls `tally.hit()`; a high-priority task calls `record_high(sent)`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from collections.abc import Callable

# Set by bench.peer_bench to its private server; no fallback, so never the machine's 6379.
URL: str = os.environ.get("BENCH_REDIS_URL") or sys.exit("BENCH_REDIS_URL is not set")
PRIORITY = os.environ.get("BENCH_PEER_PRIORITY") == "1"
DONE_KEY = "bench:peers:done"  # no-op tasks finished (INCRBY from the tally thread)
HIGH_KEY = "bench:peers:high"  # high-priority tasks: enqueue-to-start seconds, one per task
FLUSH_S = 0.005


class Tally:
    """Counts finished tasks in Redis without a round trip per task.

    A task only bumps an in-process counter; a daemon thread adds it to DONE_KEY every 5 ms.
    So completion can be watched from outside while the peer pays for its own work only, as
    Switchyard's no-op actor does. Fork-safe: a forked child starts its own thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._pid: int | None = None

    def hit(self) -> None:
        with self._lock:
            self._pending += 1
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(
                    target=self._flush_forever, name="bench-tally", daemon=True
                ).start()

    def _flush_forever(self) -> None:
        client = redis.Redis.from_url(URL)
        while True:
            time.sleep(FLUSH_S)
            with self._lock:
                count, self._pending = self._pending, 0
            if count:
                client.incrby(DONE_KEY, count)


tally = Tally()
_clients: dict[int, redis.Redis] = {}


def record_high(sent: float) -> None:
    """A high-priority task started: keep how long after its enqueue (`sent`, Unix seconds)."""
    latency = time.time() - sent
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = redis.Redis.from_url(URL)
    client.rpush(HIGH_KEY, repr(latency))


def paced(send: Callable[[float], None], rate: float, seconds: float) -> dict[str, Any]:
    """Call `send(enqueue time)` `rate` times a second for `seconds`, on a fixed schedule."""
    total = int(rate * seconds)
    started = time.perf_counter()
    late = 0.0
    for number in range(total):
        delay = started + number / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            late = max(late, -delay)
        send(time.time())
    return {
        "sent": total,
        "seconds": round(time.perf_counter() - started, 4),
        "late_max_ms": round(late * 1000, 3),
    }


def main(
    fill: Callable[[int], None],
    worker: Callable[[], None],
    send_high: Callable[[float], None] | None = None,
) -> None:
    """The roles' command line (see the module docstring)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("fill", "worker", "paced"))
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.role == "fill":
        started = time.perf_counter()
        fill(args.count)
        print(json.dumps({"count": args.count, "seconds": time.perf_counter() - started}))
    elif args.role == "worker":
        worker()
    else:
        if send_high is None:
            parser.error("this peer has no priorities")
        print(json.dumps(paced(send_high, args.rate, args.seconds)))


def wait_for_sigterm() -> None:
    """Block the main thread until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
