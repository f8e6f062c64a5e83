"""Retention: acknowledged entries do not pile up, and consumers that left do not linger.

Every service runs it for the partitions it keeps (one service each, `keeper`); each step
is idempotent, so two keepers for a moment, while services join or leave, do no harm. A
class stream is trimmed below the oldest entry any group still needs (pending, or not yet
delivered) with XTRIM MINID. The optional
`max_len` cap is a memory guard for Redis: when it has to cut entries no group has finished,
it counts them (`switchyard_events_trimmed_unprocessed_total`) and logs a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog

from router.streams import keys
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from router.config import Config
    from router.metrics import Metrics
    from router.streams.redis import RedisTransport

log = structlog.get_logger("switchyard.retention")

TRIM_EVERY_S = 10.0
STALE_CONSUMER_MS = 3_600_000  # an hour idle with nothing pending: the process is gone


class Retention:
    """Trims the class streams and removes stale consumers, on a timer."""

    def __init__(
        self,
        config: Config,
        transport: RedisTransport,
        metrics: Metrics,
        keeper: Callable[[str], bool] = lambda tag: True,
    ) -> None:
        self.config = config
        self.transport = transport
        self.redis = transport.redis
        self.metrics = metrics
        self.keeper = keeper  # whether this service keeps a partition

    async def run(self, every_s: float = TRIM_EVERY_S) -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(*UNAVAILABLE):  # Redis away: next round
                await self.sweep()

    async def sweep(self) -> None:
        """One round over every partition; one that fails is logged and the others go on."""
        for cls, settings in self.config.classes.items():
            # `max_len` bounds the class: each of its partitions keeps its share
            share = -(-settings.max_len // settings.partitions) if settings.max_len else None
            for tag in [t for t in keys.tags(cls, settings.partitions) if self.keeper(t)]:
                try:
                    await self.trim(tag, share)
                    await self.remove_stale_consumers(tag)
                    await self.trim_dead_letters(tag)
                except UNAVAILABLE:
                    raise
                except Exception:
                    log.exception("retention failed for a partition", partition=tag)
        for name in [n for n in keys.INGRESS_REJECTS if self.keeper(n)]:
            await self.trim_dead_letters(name)

    async def trim_dead_letters(self, name: str, now: float | None = None) -> int:
        """Cut a dead-letter stream to `dead_letter_max_age_s` and `dead_letter_max_len`,
        counting and logging what goes: dead letters are kept for people, not for ever."""
        settings = self.config.service
        stream = keys.dead_letters(name)
        oldest_kept_ms = int(((now or time.time()) - settings.dead_letter_max_age_s) * 1000)
        aged = int(await self.redis.xtrim(stream, minid=f"{oldest_kept_ms}-0", approximate=False))
        capped = int(
            await self.redis.xtrim(stream, maxlen=settings.dead_letter_max_len, approximate=False)
        )
        if aged or capped:
            self.metrics.dead_letters_trimmed.labels(keys.class_of(name)).inc(aged + capped)
            log.warning("dead letters trimmed", partition=name, too_old=aged, over_max_len=capped)
        return aged + capped

    async def trim(self, tag: str, max_len: int | None = None) -> int:
        """Drop entries every group has finished with; then enforce `max_len`. Returns removed."""
        stream = keys.stream(tag)
        floor = await self.floor(tag)
        removed = 0
        if floor is not None:
            removed = int(await self.redis.xtrim(stream, minid=floor, approximate=False))
        if max_len is not None:
            over = int(await self.redis.xlen(stream)) - max_len
            if over > 0:
                cut = int(await self.redis.xtrim(stream, maxlen=max_len, approximate=False))
                removed += cut
                self.metrics.trimmed_unprocessed.labels(keys.class_of(tag)).inc(cut)
                log.warning("max_len cut entries no group has finished", partition=tag, cut=cut)
        if removed:
            self.metrics.trimmed.labels(keys.class_of(tag)).inc(removed)
        return removed

    async def floor(self, tag: str) -> str | None:
        """The oldest id any group still needs; everything older can go. None: keep all."""
        stream = keys.stream(tag)
        groups: Any = await self.redis.xinfo_groups(stream)
        floors: list[str] = []
        for group in groups:
            info = {_text(k): v for k, v in group.items()}
            # XPENDING after XINFO: the pending entries may have been acked in between.
            summary: Any = await self.redis.xpending(stream, info["name"])
            if summary["pending"] and summary["min"] is not None:
                floors.append(_text(summary["min"]))
            else:
                floors.append(_successor(_text(info["last-delivered-id"])))
        if not floors:
            return None
        return min(floors, key=_id_key)

    async def remove_stale_consumers(self, tag: str, idle_ms: int = STALE_CONSUMER_MS) -> int:
        """Delete consumers idle for `idle_ms` that hold nothing (a pending entry is kept)."""
        stream = keys.stream(tag)
        group = self.transport.group
        removed = 0
        consumers: Any = await self.redis.xinfo_consumers(stream, group)
        for consumer in consumers:
            info: Mapping[str, Any] = {_text(k): v for k, v in consumer.items()}
            name = _text(info["name"])
            if (
                name == self.transport.consumer
                or int(info["pending"])
                or int(info["idle"]) < idle_ms
            ):
                continue
            await self.redis.xgroup_delconsumer(stream, group, name)
            removed += 1
            log.info("removed stale consumer", partition=tag, consumer=name)
        return removed


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _successor(entry_id: str) -> str:
    """The smallest stream id after `entry_id` (MINID keeps ids >= it)."""
    ms, seq = _id_key(entry_id)
    return f"{ms}-{seq + 1}"
