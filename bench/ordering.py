"""Per-key order as the handlers saw it: an actor that logs every handler's start and end into
Redis, and the check that reads the log back. `bench.scale` and the scale-out tests use both.

Events carry `{"key": ..., "seq": n}`, with each key's `seq` counting up from 0 in the order
they were published. A start of `seq` n is out of order unless the end of n - 1 was logged
before it: an event that overtook its predecessor, or ran beside it, breaks that. A second
handler run of an n is a repeat: a reclaimed entry may repeat, it may not overtake. (Each run
logs a token of its own, so a line the Redis client sent twice, say after a timeout, is not
mistaken for a second run.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.api import Actor
from router.streams.client import connect

if TYPE_CHECKING:
    from actors.api import Context, Envelope
    from router.streams.client import RedisClient

LOG = "order:log"  # one list: the log is read back in the order Redis took the lines


class OrderLog(Actor):
    """Logs `<key> <seq> start|end <run>` around each event; sleeps `sleep_ms` in between.

    Options: `url` (the Redis of the log), `sleep_ms` (how long a handler "works", so that
    handlers of other keys overlap), `log` (the list's key).
    """

    def __init__(self, *, url: str, sleep_ms: float = 0.0, log: str = LOG, **options: Any) -> None:
        super().__init__(url=url, sleep_ms=sleep_ms, log=log, **options)
        self.url = url
        self.sleep_s = sleep_ms / 1000
        self.log_key = log
        self.redis: RedisClient | None = None

    async def start(self) -> None:
        self.redis = connect(self.url)

    async def stop(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def handle(self, event: Envelope, ctx: Context) -> None:
        assert self.redis is not None  # started
        payload = event.payload
        key, seq, run = payload["key"], payload["seq"], uuid.uuid4().hex[:12]
        await self.redis.rpush(self.log_key, f"{key} {seq} start {run}")
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        await self.redis.rpush(self.log_key, f"{key} {seq} end {run}")


@dataclass
class OrderReport:
    """What the log shows: events ended, out-of-order starts, repeats, missing events."""

    ended: int = 0
    out_of_order: list[str] = field(default_factory=list)
    repeats: int = 0
    missing: int = 0

    @property
    def ok(self) -> bool:
        return not self.out_of_order and not self.missing


def check(lines: list[bytes], expected: dict[str, int] | None = None) -> OrderReport:
    """Read a log; `expected` (key -> events published) also counts events never ended."""
    report = OrderReport()
    runs: dict[tuple[str, int], set[str]] = defaultdict(set)
    ended: dict[str, set[int]] = defaultdict(set)
    for raw in lines:
        key, seq_text, what, run = raw.decode().split()
        seq = int(seq_text)
        if what == "end":
            ended[key].add(seq)
            continue
        if runs[key, seq] and run not in runs[key, seq]:
            report.repeats += 1
        runs[key, seq].add(run)
        if seq > 0 and seq - 1 not in ended[key]:
            report.out_of_order.append(f"{key} {seq} started before {seq - 1} ended")
    report.ended = sum(len(seqs) for seqs in ended.values())
    for key, count in (expected or {}).items():
        report.missing += count - len(ended[key] & set(range(count)))
    return report


async def read_log(redis: RedisClient, log: str = LOG) -> list[bytes]:
    lines: list[Any] = await redis.lrange(log, 0, -1)
    return [line if isinstance(line, bytes) else line.encode() for line in lines]


def keyed_events(keys: int, per_key: int, start: int = 0) -> list[dict[str, Any]]:
    """`per_key` events for each of `keys` keys, seqs from `start`, keys interleaved."""
    return [
        {"key": f"k{key}", "seq": seq}
        for seq in range(start, start + per_key)
        for key in range(keys)
    ]
