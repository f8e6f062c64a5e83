"""A workload's device registry, in Redis: one hash, device id -> the device (JSON), shared by
every instance. A million devices cost one hash field each; a lookup is one HGET."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.notify.device import Device
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

SCAN_COUNT = 1000


class Registry:
    """The devices of `workload`."""

    def __init__(self, redis: Redis | RedisCluster, workload: str) -> None:
        self.redis = redis
        self.workload = workload
        self.key = keys.devices(workload)

    async def add(self, device: Device) -> bool:
        """Register `device`, or replace its settings; True when it is new."""
        return bool(await self.redis.hset(self.key, device.id, device.to_json()))

    async def get(self, device_id: str) -> Device | None:
        found = await self.redis.hget(self.key, device_id)
        return None if found is None else Device.from_json(found)

    async def remove(self, device_id: str) -> bool:
        return bool(await self.redis.hdel(self.key, device_id))

    async def count(self) -> int:
        return int(await self.redis.hlen(self.key))

    async def devices(self) -> AsyncIterator[Device]:
        """Every device, a page at a time (never the whole hash at once)."""
        async for _, value in self.redis.hscan_iter(self.key, count=SCAN_COUNT):
            yield Device.from_json(value)
