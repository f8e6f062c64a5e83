"""Membership: which processes run each lane's pools right now, by heartbeats in Redis.

Every process beats into one sorted set, a `<lane> <consumer>` member per lane it runs, scored
by Redis's own clock (so the hosts' clocks never have to agree), and reads back who beat
within `member_timeout_s`: one script, six commands, whatever the number of lanes.
A SIGKILLed, partitioned or frozen process stops beating and drops out of the live set
within that time; the others then take over its partitions and its pending entries.

A process that beats late (its own loop stalled, or Redis did) cannot tell whether the others
were stalled with it: on one host, or behind one Redis, they were. So the time its own beat
was late by is not counted against them, for that beat: a stall never makes live members
look dead, and a member that really stopped is judged at the next beat on time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.streams.client import RedisClient

FORGET_FACTOR = 20  # a member silent this many timeouts is deleted from the set

# KEYS: the member set. ARGV: timeout ms, "1" to leave instead of beating, how many timeouts
# a silent member is kept, heartbeat ms, then this process's members (`<lane> <consumer>`).
# Returns the members seen within the timeout, and within the time this beat was late by.
_BEAT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local timeout = tonumber(ARGV[1])
local late = 0
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[1], unpack(ARGV, 5))
else
  local previous = redis.call('ZSCORE', KEYS[1], ARGV[5])
  if previous then
    late = math.max(0, now - tonumber(previous) - tonumber(ARGV[4]))
  end
  local scored = {}
  for i = 5, #ARGV do
    scored[#scored + 1] = now
    scored[#scored + 1] = ARGV[i]
  end
  redis.call('ZADD', KEYS[1], unpack(scored))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - timeout * tonumber(ARGV[3]))
return redis.call('ZRANGEBYSCORE', KEYS[1], now - timeout - late, '+inf')
"""


class Membership:
    """This process's place among the processes of its lanes."""

    def __init__(
        self,
        redis: RedisClient,
        consumer: str,
        lanes: Sequence[str],
        timeout_s: float,
        heartbeat_s: float,
    ) -> None:
        self.consumer = consumer
        self.lanes = list(lanes)
        self.timeout_ms = int(timeout_s * 1000)
        self.heartbeat_ms = int(heartbeat_s * 1000)
        self._beat = redis.register_script(_BEAT)

    async def beat(self) -> dict[str, frozenset[str]]:
        """Say this process is alive; per lane, the live members (this one among them)."""
        return await self._run(leave=False)

    async def leave(self) -> None:
        """Leave every lane at once, so the others take over now rather than at the timeout."""
        await self._run(leave=True)

    async def _run(self, *, leave: bool) -> dict[str, frozenset[str]]:
        if not self.lanes:
            return {}
        mine = [f"{lane} {self.consumer}" for lane in self.lanes]
        args: list[str | int] = [self.timeout_ms, int(leave), FORGET_FACTOR, self.heartbeat_ms]
        args += mine
        reply: Any = await self._beat(keys=[keys.lane_members()], args=args)
        live: dict[str, set[str]] = {lane: set() for lane in self.lanes}
        for member in reply:
            lane, _, consumer = _text(member).rpartition(" ")  # no space in a consumer name
            if lane in live:
                live[lane].add(consumer)
        return {lane: frozenset(members) for lane, members in live.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
