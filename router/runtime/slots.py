"""A pool's in-flight entries: what it fetched and has not settled yet, against its capacity.

The reader waits here for room before it fetches, so a backlog stays in Redis, not in this
process; the settler frees room; every slot given back is also given back to the lane
scheduler, which shares the process's capacity between lanes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from router.runtime.scheduler import LaneScheduler


class Slots:
    """The entry ids one pool holds, its capacity, and the event that says room was freed."""

    def __init__(self, capacity: int, unit: int, lane: str, scheduler: LaneScheduler) -> None:
        self.capacity = capacity
        self.unit = unit  # entries one piece of work takes: a batch in batch mode, else one
        self.lane = lane
        self.scheduler = scheduler
        self.held: set[bytes] = set()
        self.redelivered: set[bytes] = set()  # held entries some consumer had before
        self.freed = asyncio.Event()

    @property
    def inflight(self) -> int:
        return len(self.held)

    @property
    def free(self) -> int:
        return self.capacity - len(self.held)

    @property
    def per_fetch(self) -> int:
        """The most one fetch takes: half the capacity, in whole units (one at least). While
        one half is handled the other is read or acknowledged, so the process has work to do
        through every round trip instead of waiting on each with all its slots held."""
        return max(1, self.capacity // self.unit // 2) * self.unit

    def release(self, entry_ids: Iterable[bytes]) -> None:
        """Entries settled, or left pending for reclaim: their slots are free again."""
        before = len(self.held)
        self.held.difference_update(entry_ids)
        if self.redelivered:
            self.redelivered.intersection_update(self.held)
        self.scheduler.release(self.lane, before - len(self.held))
        self.freed.set()

    async def wait_for_room(self, stopping: asyncio.Event) -> bool:
        """True once a whole unit of work fits again, False once `stopping` is set, which
        `stop` tells this wait. (No task races the two: a full pool waits here at every
        fetch under load.)"""
        while self.free < self.unit:
            if stopping.is_set():
                return False
            self.freed.clear()
            await self.freed.wait()
        return True

    def stop(self) -> None:
        """Wake a wait for room, so that it sees its stop."""
        self.freed.set()

    async def wait_empty(self) -> None:
        while self.held:
            self.freed.clear()
            await self.freed.wait()

    def reset(self) -> None:
        """Forget a failed run's entries (they stay pending in Redis) and their slots."""
        self.scheduler.release(self.lane, len(self.held))
        self.held.clear()
        self.redelivered.clear()
