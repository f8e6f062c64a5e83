"""The hand-off from a pool's reader to its handler tasks."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Handoff:
    """Work from the reader to the workers, waking one idle worker at a time.

    Only one woken worker is on its way at any moment: it takes an item and, if more is
    waiting, wakes the next. A handler that never suspends therefore drains a whole fetch in
    one task step, while handlers that wait on I/O still spread over the workers, one wake-up
    per item. (An asyncio.Queue wakes one waiting worker per item put: hundreds of task
    switches per fetch.) Its size is bounded by the pool's in-flight count, which the reader
    never lets pass the pool's capacity.
    """

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._waking = 0  # workers woken and not yet running

    def put(self, item: Any) -> None:
        self._items.append(item)
        if not self._waking:
            self._wake_one()

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            try:
                await waiter
            finally:
                if waiter.done() and not waiter.cancelled():
                    self._waking -= 1
        item = self._items.popleft()
        if self._items and not self._waking:
            self._wake_one()
        return item

    def _wake_one(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                return
