"""A workload's live state in Redis, read for its analytics provider (`analytics.Lookups`):
its records, its classes' dead letters and their streams' figures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.streams import keys
from router.streams.deadletters import DeadLetters
from router.streams.records import Records
from router.streams.transport import per_class

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.config import Config
    from router.streams.client import RedisClient
    from router.streams.deadletters import DeadLetter
    from router.streams.transport import StreamStats, Transport


class RedisLookups:
    """The `Lookups` of `workload`, over the service's (or a command's) Redis client."""

    def __init__(
        self, redis: RedisClient, transport: Transport, config: Config, workload: str
    ) -> None:
        self.transport = transport
        self.config = config
        self._records = Records(redis, workload)
        self._redis = redis

    async def records(self, names: Sequence[str]) -> list[dict[str, str]]:
        return await self._records.many(names)

    async def dead_letters(self, cls: str, limit: int = 100) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        for tag in self._tags(cls):
            found += await DeadLetters(self._redis, self.transport, tag).entries(limit=limit)
        return sorted(found, key=lambda letter: letter.entry_id)[:limit]

    async def streams(self, classes: Sequence[str]) -> dict[str, StreamStats]:
        tags = [tag for cls in classes for tag in self._tags(cls)]
        return per_class(await self.transport.stats(tags)) if tags else {}

    def _tags(self, cls: str) -> list[str]:
        settings = self.config.classes.get(cls)
        return keys.tags(cls, settings.partitions) if settings is not None else []
