"""When each device last reported, kept as when it will be due: `seen()` on the ingest path is
a dict write; `flush()` (a second later, from the fleet loop) writes the lot to Redis.

A device's due time is its last report plus `offline_after` times its interval (its own
registered `interval_s`, else the fleet's), so the watch finds every silent device with one
range query whatever their intervals. A flush also finds the devices that were offline and
reported again, and announces them online (one instance does: the one whose HDEL removed it).

The pending dict is bounded: past `MAX_PENDING` devices between two flushes, new devices
wait for the next report (counted in `dropped`), never memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.notify.device import Device
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import Mapping

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from router.config import FleetConfig
    from router.fleet.announce import Announcer

MAX_PENDING = 200_000
CHUNK = 5_000


class Presence:
    """Reports of the fleets' devices, on their way to Redis."""

    def __init__(
        self, redis: Redis | RedisCluster, fleets: Mapping[str, FleetConfig], announcer: Announcer
    ) -> None:
        self.redis = redis
        self.fleets = fleets
        self.announcer = announcer
        self.workload_of = {cls: name for name, fleet in fleets.items() for cls in fleet.classes}
        self._pending: dict[str, dict[str, float]] = {name: {} for name in fleets}
        self.dropped = 0

    def seen(self, cls: str, device: str | None, at: float) -> None:
        """An event of `cls` from `device` arrived at `at` (Unix s); cheap, on the hot path."""
        workload = self.workload_of.get(cls)
        if workload is None or not device:
            return
        pending = self._pending[workload]
        if device in pending:
            pending[device] = max(pending[device], at)
        elif len(pending) < MAX_PENDING:
            pending[device] = at
        else:
            self.dropped += 1

    async def flush(self) -> int:
        """Write every pending report; returns how many devices were written."""
        written = 0
        for workload, fleet in self.fleets.items():
            pending, self._pending[workload] = self._pending[workload], {}
            items = list(pending.items())
            for start in range(0, len(items), CHUNK):
                try:
                    await self._write(workload, fleet, dict(items[start : start + CHUNK]))
                except BaseException:
                    self._requeue(workload, items[start:])
                    raise
                written += len(items[start : start + CHUNK])
        return written

    async def _write(self, workload: str, fleet: FleetConfig, reports: dict[str, float]) -> None:
        devices = list(reports)
        intervals = await self._intervals(workload, fleet, devices)
        allowance = {d: fleet.offline_after * intervals[d] for d in devices}
        await self.redis.zadd(
            keys.last_seen(workload), {d: reports[d] + allowance[d] for d in devices}, gt=True
        )
        was_offline = await self.redis.hmget(keys.offline(workload), devices)
        back = {d: float(due) for d, due in zip(devices, was_offline, strict=True) if due}
        if not back:
            return
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip for all
            for device in back:
                pipe.hdel(keys.offline(workload), device)
            removed = await pipe.execute()
        for (device, due), mine in zip(back.items(), removed, strict=True):
            if mine:  # this instance's HDEL took it: only one announces it back
                self.announcer.add(workload, device, "online", reports[device], due=due)

    async def _intervals(
        self, workload: str, fleet: FleetConfig, devices: list[str]
    ) -> dict[str, float]:
        """Each device's expected interval: its registered `interval_s`, else the fleet's."""
        registered = await self.redis.hmget(keys.devices(workload), devices)
        found = {}
        for device, raw in zip(devices, registered, strict=True):
            interval = fleet.interval_s
            if raw is not None:
                interval = Device.from_json(raw).settings.get("interval_s", interval)
            found[device] = interval
        return found

    def _requeue(self, workload: str, items: list[tuple[str, float]]) -> None:
        """Reports a failed flush did not write go back, unless newer ones came since."""
        pending = self._pending[workload]
        for device, at in items:
            if len(pending) < MAX_PENDING or device in pending:
                pending[device] = max(pending.get(device, 0.0), at)
