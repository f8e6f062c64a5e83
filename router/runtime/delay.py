"""The delay queue's promoter: due events (retries, timed waits) move back into the stream.

The move is one script in Redis, so every instance can run it at once. The promoter sleeps
until the next due event and wakes early when its own pool schedules a retry; a short poll
bound catches what other instances and classes schedule.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from router.backoff import Backoff
from router.clock import wait_set
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from router.clock import Clock
    from router.streams.transport import Transport

PROMOTE_POLL_S = 0.25  # how soon a delayed event scheduled elsewhere is noticed


class Promoter:
    """Moves one class's due delayed events into its stream."""

    def __init__(self, cls: str, transport: Transport, clock: Clock) -> None:
        self.cls = cls
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
                moved, next_due = await self.transport.promote_due(self.cls)
                backoff.reset()
            except UNAVAILABLE:
                await asyncio.sleep(backoff.next_delay())
                continue
            if moved:
                continue
            wait = PROMOTE_POLL_S if next_due is None else next_due - self.clock.wall()
            await wait_set(self._scheduled, min(PROMOTE_POLL_S, max(0.005, wait)))
