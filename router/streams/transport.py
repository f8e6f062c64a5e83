"""The class streams as the rest of Switchyard sees them: the Transport protocol, what it
carries, and which errors mean "Redis is unavailable, try again"."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.streams import keys
from router.streams.records import RecordUpdate

# Redis away, slow, or refusing writes for now (out of memory, loading, a read-only replica,
# a cluster in motion):
# back off and retry, answer 503, report not ready. Anything else is a bug or a
# misconfiguration and should surface.
UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    OutOfMemoryError,
    BusyLoadingError,
    ReadOnlyError,
    MasterDownError,
    # a Redis Cluster resharding (MOVED, ASK, TRYAGAIN), down, or with a node gone
    AskError,
    TryAgainError,
    ClusterError,
    SlotNotCoveredError,
)

Fields = Mapping[str, str | bytes | int | float]
Extra = tuple[str, Fields] | RecordUpdate  # written beside envelopes: an entry, a record


class Outgoing(NamedTuple):
    """An encoded envelope on its way into a class, and the partition of the class it goes to
    (`tag`; None: the class's only partition). A tuple: ingest makes one per event."""

    cls: str
    data: bytes
    dedup_id: str | None = None  # skip it when this id arrived in the partition in the window
    due: float | None = None  # Unix seconds: wait in the delay queue until then
    tag: str | None = None

    @property
    def partition(self) -> str:
        return self.cls if self.tag is None else self.tag


@dataclass(frozen=True, slots=True)
class Written:
    """What one write did, entry by entry, so that one refused entry fails only its own: per
    item its stream id, b"delayed", None (a de-duplicated repeat) or the error Redis refused it
    with; per extra entry None or its error. Redis being unavailable is raised, not returned."""

    ids: list[bytes | Exception | None]
    extras: list[Exception | None]

    def checked(self) -> list[bytes | None]:
        """The ids; the first refusal, of an item or an extra entry, raised."""
        ids: list[bytes | None] = []
        for result in self.ids:
            if isinstance(result, Exception):
                raise result
            ids.append(result)
        for refused in self.extras:
            if refused is not None:
                raise refused
        return ids

    def refusals(self) -> list[tuple[int, Exception]]:
        """(index, error) of each refused item."""
        return [(i, r) for i, r in enumerate(self.ids) if isinstance(r, Exception)]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What Redis knows about one class stream and its consumer group."""

    length: int = 0
    pending: int = 0
    backlog: int = 0
    oldest_ms: int | None = None  # Unix ms of the oldest entry not yet acknowledged
    dead_letters: int = 0
    delayed: int = 0  # events waiting for their due time: retries and timed waits


def per_class(stats: Mapping[str, StreamStats]) -> dict[str, StreamStats]:
    """Partitions' figures summed into their classes' (the oldest entry: the oldest of all)."""
    classes: dict[str, StreamStats] = {}
    for tag, part in stats.items():
        cls = keys.class_of(tag)
        seen = classes.get(cls)
        if seen is None:
            classes[cls] = part
            continue
        oldest = [ms for ms in (seen.oldest_ms, part.oldest_ms) if ms is not None]
        classes[cls] = StreamStats(
            length=seen.length + part.length,
            pending=seen.pending + part.pending,
            backlog=seen.backlog + part.backlog,
            oldest_ms=min(oldest) if oldest else None,
            dead_letters=seen.dead_letters + part.dead_letters,
            delayed=seen.delayed + part.delayed,
        )
    return classes


class Transport(Protocol):
    """The class streams of one consumer group, as seen by one consumer.

    `RedisTransport` is the one implementation; `router.testing.fake_transport()` runs the
    same code on fakeredis for tests that need no server.
    """

    group: str
    consumer: str

    async def ensure_group(self, tag: str) -> None:
        """Create the class stream and its group, delivering from the start; idempotent."""

    async def publish(
        self, items: Sequence[Outgoing], extra: Sequence[Extra] = ()
    ) -> list[bytes | None]:
        """Write envelopes into their classes and `extra` (stream, fields) entries and
        record updates, in one round trip; per item, its stream id, b"delayed", or None for
        a de-duplicated repeat. Anything Redis refuses is raised."""

    async def write(
        self, items: Sequence[Outgoing], extra: Sequence[Extra] = (), *, line: str | None = None
    ) -> Written:
        """`publish`, with what Redis refuses returned entry by entry instead of raised; a
        caller that writes one call at a time may name its own `line` (connection)."""

    async def settle(
        self,
        tag: str,
        entry_ids: Sequence[bytes],
        retries: Sequence[tuple[float, bytes]] = (),
        dead: Sequence[Fields] = (),
    ) -> None:
        """Acknowledge entries, atomically with their retries and dead letters."""

    async def promote_due(self, tag: str, limit: int = 500) -> tuple[int, float | None]:
        """Move due delayed events into the stream; (moved, next due in Unix seconds)."""

    async def move_if_deleted(self, source: str, entry_id: bytes, tag: str, data: bytes) -> bool:
        """Move an entry of `source` into partition `tag` as `data`, once however many callers
        try; True for the caller that moved it."""

    async def read(self, tag: str, count: int, block_ms: int) -> list[tuple[bytes, bytes | None]]:
        """Up to `count` new entries for this consumer: (stream id, envelope bytes or None)."""

    async def claim_idle(
        self, tag: str, min_idle_ms: int, count: int, cursor: bytes = b"0-0"
    ) -> tuple[bytes, list[tuple[bytes, bytes | None, int]]]:
        """Take over entries idle longer than `min_idle_ms`; (next cursor, claimed entries)."""

    async def claim_from(
        self, tag: str, alive: Collection[str], count: int, min_idle_ms: int = 0
    ) -> list[tuple[bytes, bytes | None, int]]:
        """Take over the pending entries of every consumer but this one and those `alive`,
        oldest first."""

    async def hold_lease(self, tag: str, ttl_ms: int) -> bool:
        """Take or keep an ordered partition's lease; False while another consumer holds it."""

    async def drop_lease(self, tag: str) -> None:
        """Give up an ordered partition's lease, if it is still this consumer's."""

    async def renew(self, tag: str, entry_ids: Sequence[bytes]) -> None:
        """Reset the idle time of entries still being handled."""

    async def stats(self, tags: Sequence[str]) -> dict[str, StreamStats]:
        """Length, pending, backlog, oldest unfinished entry and dead letters, per partition."""

    async def check_writable(self) -> None:
        """Raise what a write raises now (out of memory, read-only), which a PING does not."""
