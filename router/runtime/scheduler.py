"""The lane scheduler: admits work across classes inside one process by priority lane.

Pools ask for slots before they fetch, so what is not admitted stays in Redis. Each lane's
`min_share` of the capacity is reserved for it: other lanes never take those slots, so a lane
always gets its minimum, even after a flood of higher work arrived while it was quiet. When
the process is saturated (its `capacity` of in-flight entries is used up), waiting work is
admitted in this order:
1. a waiter that has waited longer than its lane's `max_wait_ms` (ageing: it cannot starve);
2. a lane using less than its `min_share` of the capacity (the guaranteed minimum);
3. the highest lane.
Within one rule, waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.clock import Clock
    from router.config import LaneConfig


@dataclass(slots=True)
class _Waiter:
    want: int
    since: float
    future: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class LaneState:
    """One lane's share of the process: slots in use and waiters."""

    rank: int
    min_slots: int
    max_wait_s: float | None
    used: int = 0
    waiters: deque[_Waiter] = field(default_factory=deque)

    @property
    def waiting(self) -> int:
        return sum(w.want for w in self.waiters if not w.future.done())


class LaneScheduler:
    """A shared in-flight capacity, handed out by lane priority with minimum shares."""

    def __init__(self, capacity: int, lanes: Sequence[LaneConfig], clock: Clock) -> None:
        self.clock = clock
        self.lanes: dict[str, LaneState] = {}
        self.used = 0  # slots in use in every lane: the sum of theirs, kept as they change
        self.resize(capacity, lanes)

    def resize(self, capacity: int, lanes: Sequence[LaneConfig]) -> None:
        """A new capacity (a reload changed the pools'); what each lane holds is kept."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        for rank, lane in enumerate(lanes):
            min_slots = int(lane.min_share * capacity)
            state = self.lanes.get(lane.name)
            if state is not None:  # a reload: its slots in use and its waiters stay
                state.min_slots = min_slots
                continue
            max_wait_s = lane.max_wait_ms / 1000 if lane.max_wait_ms is not None else None
            self.lanes[lane.name] = LaneState(rank, min_slots, max_wait_s)
        self._admit()  # more room: waiters may go in now

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def available(self, lane: str) -> int:
        """Free slots `lane` may take: the free capacity less the other lanes' unused reserve."""
        reserved = sum(
            max(0, state.min_slots - state.used)
            for name, state in self.lanes.items()
            if name != lane
        )
        return self.free - reserved

    def try_acquire(self, lane: str, want: int) -> int:
        """Up to `want` slots at once if nobody is waiting ahead; 0 means `acquire()` must wait."""
        if any(s.waiters for s in self.lanes.values()):
            return 0
        granted = min(want, self.available(lane))
        if granted <= 0:
            return 0
        self._take(self.lanes[lane], granted)
        return granted

    async def acquire(self, lane: str, want: int) -> int:
        """Wait for between 1 and `want` slots in `lane`; returns how many were granted."""
        granted = self.try_acquire(lane, want)
        if granted:
            return granted
        state = self.lanes[lane]
        waiter = _Waiter(want, self.clock.monotonic())
        state.waiters.append(waiter)
        self._admit()  # those ahead may be unable to use the free slots that this lane can
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(lane, waiter.future.result())  # granted as we were cancelled
            raise
        finally:
            if waiter in state.waiters:
                state.waiters.remove(waiter)

    def release(self, lane: str, count: int) -> None:
        """Give back slots (work settled, or fetched fewer than granted) and admit waiters."""
        if count <= 0:
            return
        state = self.lanes[lane]
        returned = min(count, state.used)
        state.used -= returned
        self.used -= returned
        self._admit()

    def _admit(self) -> None:
        while self.free > 0:
            picked = self._next()
            if picked is None:
                return
            name, state, waiter = picked
            state.waiters.popleft()
            granted = min(waiter.want, self.available(name))
            self._take(state, granted)
            waiter.future.set_result(granted)

    def _take(self, state: LaneState, granted: int) -> None:
        state.used += granted
        self.used += granted

    def _next(self) -> tuple[str, LaneState, _Waiter] | None:
        """The waiter to admit next, by the rules in the module docstring; None if no waiter
        can be given a slot now."""
        heads = []
        for name, state in self.lanes.items():
            while state.waiters and state.waiters[0].future.done():
                state.waiters.popleft()  # cancelled while waiting
            if state.waiters and self.available(name) > 0:
                heads.append((name, state, state.waiters[0]))
        if not heads:
            return None
        now = self.clock.monotonic()
        aged = [
            head
            for head in heads
            if head[1].max_wait_s is not None and now - head[2].since >= head[1].max_wait_s
        ]
        if aged:
            return min(aged, key=lambda head: head[2].since)
        starved = [head for head in heads if head[1].used < head[1].min_slots]
        return min(starved or heads, key=lambda head: head[1].rank)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {
            name: {"used": state.used, "waiting": state.waiting, "min_slots": state.min_slots}
            for name, state in self.lanes.items()
        }
