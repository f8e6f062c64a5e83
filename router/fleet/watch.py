"""The watch: devices past their due time are offline, announced once.

One process per workload keeps the watch (`keeper`), every `check_every_s`: it flushes the
reports that arrived, then moves every device whose due time has passed from the due set to
the offline hash in one script (a report landing at the same moment either comes before, and
the device is not due, or after, and its flush finds it offline and announces it back), and
announces each. A pass takes at most `PER_PASS` devices; the next takes the rest.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from router.clock import Clock
    from router.config import FleetConfig
    from router.fleet.announce import Announcer
    from router.fleet.presence import Presence

log = structlog.get_logger("switchyard.fleet")

PER_PASS = 10_000
MARK_OFFLINE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
    redis.call('ZREM', KEYS[1], due[i])
    redis.call('HSET', KEYS[2], due[i], due[i + 1])
end
return due
"""


class FleetWatch:
    """Flushes reports and finds silent devices, for every configured fleet."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        fleets: Mapping[str, FleetConfig],
        presence: Presence,
        announcer: Announcer,
        *,
        clock: Clock,
        keeper: Callable[[str], bool],
    ) -> None:
        self.redis = redis
        self.fleets = fleets
        self.presence = presence
        self.announcer = announcer
        self.clock = clock
        self.keeper = keeper
        self.every_s = min(fleet.check_every_s for fleet in fleets.values())
        self._mark = redis.register_script(MARK_OFFLINE)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.check()
            except Exception as exc:  # Redis away: reports and announcements wait for the next pass
                log.warning("fleet check failed; trying again", error=repr(exc))

    async def check(self) -> int:
        """One pass: reports written, silent devices marked and announced; how many went."""
        await self.presence.flush()
        went = 0
        for workload, fleet in self.fleets.items():
            if self.keeper(workload):
                went += await self._mark_silent(workload, fleet)
        await self.announcer.flush()
        return went

    async def _mark_silent(self, workload: str, fleet: FleetConfig) -> int:
        now = self.clock.wall()
        marked = await self._mark(
            keys=[keys.last_seen(workload), keys.offline(workload)], args=[now, PER_PASS]
        )
        for device, due in zip(marked[::2], marked[1::2], strict=True):
            name = device.decode() if isinstance(device, bytes) else str(device)
            self.announcer.add(workload, name, "offline", float(due))
        return len(marked) // 2
