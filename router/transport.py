"""Redis Streams I/O for the class streams: batched publish, group reads, batched acks, stats."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router import keys

# Redis being away or slow; anything else is a bug or a misconfiguration and should surface.
UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)

# One server-side loop per class stream: a whole batch costs one command, not one per event.
_XADD_MANY = """
local ids = {}
for i = 1, #ARGV do
  ids[i] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
end
return ids
"""

BACKLOG_COUNT_LIMIT = 10_000

Fields = Mapping[str, str | bytes | int | float]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What Redis knows about one class stream and its consumer group."""

    length: int = 0
    pending: int = 0
    backlog: int = 0


class Transport:
    """The class streams of one consumer group, as seen by one consumer (this process)."""

    def __init__(self, redis: Redis, group: str, consumer: str) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self._xadd_many = redis.register_script(_XADD_MANY)

    async def ensure_group(self, cls: str) -> None:
        """Create the class stream and its group, delivering from the start; idempotent."""
        try:
            await self.redis.xgroup_create(keys.stream(cls), self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def publish(
        self,
        entries: Sequence[tuple[str, bytes]],
        extra: Sequence[tuple[str, Fields]] = (),
    ) -> list[bytes]:
        """Append encoded envelopes to their class streams in one round trip.

        `entries` are (class, envelope bytes); `extra` are (stream key, fields) written in the
        same pipeline, e.g. audit taps. Returns the stream ids of `entries`, in order.
        """
        by_class: dict[str, list[int]] = defaultdict(list)
        for index, (cls, _) in enumerate(entries):
            by_class[cls].append(index)
        async with self.redis.pipeline(transaction=False) as pipe:
            for cls, indexes in by_class.items():
                await self._xadd_many(
                    keys=[keys.stream(cls)], args=[entries[i][1] for i in indexes], client=pipe
                )
            for stream, fields in extra:
                pipe.xadd(stream, _redis_fields(fields))
            replies = await pipe.execute()
        ids: list[bytes] = [b""] * len(entries)
        for indexes, reply in zip(by_class.values(), replies, strict=False):
            for index, stream_id in zip(indexes, reply, strict=True):
                ids[index] = stream_id
        return ids

    async def append(self, stream: str, fields: Fields) -> bytes:
        """XADD one entry to any stream (dead letters, unrouted events)."""
        stream_id: Any = await self.redis.xadd(stream, _redis_fields(fields))
        return bytes(stream_id)

    async def read(self, cls: str, count: int, block_ms: int) -> list[tuple[bytes, bytes | None]]:
        """Up to `count` new entries for this consumer, waiting up to `block_ms` for the first.

        Returns (stream id, envelope bytes or None when the entry has no envelope field).
        """
        stream = keys.stream(cls)
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group(cls)  # the stream was deleted under us; start it afresh
            return []
        if not reply:
            return []
        entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1]
        return [(entry_id, fields.get(keys.ENVELOPE_FIELD)) for entry_id, fields in entries]

    async def ack(self, cls: str, entry_ids: Sequence[bytes]) -> None:
        """Acknowledge a batch of entries of one class."""
        if entry_ids:
            await self.redis.xack(keys.stream(cls), self.group, *entry_ids)

    async def stats(self, classes: Sequence[str]) -> dict[str, StreamStats]:
        """Length, pending and not-yet-delivered counts of every class stream, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for cls in classes:
                pipe.xlen(keys.stream(cls))
                pipe.xinfo_groups(keys.stream(cls))
            replies = await pipe.execute(raise_on_error=False)
        out: dict[str, StreamStats] = {}
        for index, cls in enumerate(classes):
            length, groups = replies[2 * index], replies[2 * index + 1]
            if isinstance(length, Exception) or isinstance(groups, Exception):
                out[cls] = StreamStats()
                continue
            group = _find_group(groups, self.group)
            pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            backlog = int(lag) if lag is not None else await self._count_after(cls, group)
            out[cls] = StreamStats(length=int(length), pending=pending, backlog=backlog)
        return out

    async def _count_after(self, cls: str, group: Mapping[str, Any]) -> int:
        """Entries after the group's last delivered id, for servers older than Redis 7 (no lag).

        Counted with one bounded XRANGE, so a huge backlog reads as BACKLOG_COUNT_LIMIT.
        """
        last = group.get("last-delivered-id")
        if last is None:
            return 0
        start = b"(" + (last if isinstance(last, bytes) else str(last).encode())
        entries = await self.redis.xrange(keys.stream(cls), min=start, count=BACKLOG_COUNT_LIMIT)
        return len(entries or [])

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


def _redis_fields(fields: Fields) -> dict[Any, Any]:
    """redis-py's xadd wants an invariant dict type; any str-keyed mapping is fine at run time."""
    return dict(fields)


def _find_group(groups: Sequence[Mapping[Any, Any]], name: str) -> Mapping[str, Any]:
    for group in groups:
        decoded = {_text(k): v for k, v in group.items()}
        if _text(decoded.get("name")) == name:
            return decoded
    return {}


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
