"""The delay queue's promoter: due events (retries, timed waits) move back into the stream.

The move is one script in Redis, so every instance can run it at once. The promoter sleeps
until the next due event and wakes early when its own pool schedules a retry. One process per
partition, its keeper, also polls every `PROMOTE_POLL_S` for what other processes schedule
(emits with a delay, retries elsewhere); the others cost Redis nothing while idle.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from router.backoff import Backoff
from router.clock import wait_set
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from collections.abc import Callable

    from router.clock import Clock
    from router.streams.transport import Transport

PROMOTE_POLL_S = 1.0  # how soon the keeper notices a delayed event scheduled elsewhere


class Promoter:
    """Moves one class's due delayed events into its stream."""

    def __init__(
        self, tag: str, transport: Transport, clock: Clock, keeper: Callable[[], bool]
    ) -> None:
        self.tag = tag
        self.keeper = keeper
        self.transport = transport
        self.clock = clock
        self._scheduled = asyncio.Event()  # a retry entered this class's delay queue

    def wake(self) -> None:
        """Something was scheduled here: look again now."""
        self._scheduled.set()

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            self._scheduled.clear()  # before the round trip, so a retry settled meanwhile wakes us
            try:
                moved, next_due = await self.transport.promote_due(self.tag)
                backoff.reset()
            except UNAVAILABLE:
                await asyncio.sleep(backoff.next_delay())
                continue
            if moved:
                continue
            await wait_set(self._scheduled, self._until_next(next_due))

    def _until_next(self, next_due: float | None) -> float | None:
        """Seconds to sleep: until the next due event, and for the keeper a poll at most."""
        until_due = None if next_due is None else max(0.005, next_due - self.clock.wall())
        if not self.keeper():
            return until_due  # None: until this process schedules something here
        return PROMOTE_POLL_S if until_due is None else min(PROMOTE_POLL_S, until_due)
