"""Dispatch: fetched entries handed to a pool's handler tasks, in the class's mode.

`queue`: each entry to any idle handler. `stream`: the entries of one key one at a time, in
stream order, while different keys run concurrently. `batch`: a whole batch to one handler.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from router.runtime.handoff import Handoff

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from router.runtime.done import Entry


class Dispatcher:
    """The work waiting for handlers, and the handler loop that takes it."""

    def __init__(self, mode: str, handle: Callable[[list[Entry]], Awaitable[None]]) -> None:
        self.mode = mode
        self._handle = handle
        self._work = Handoff()
        self._keys: dict[str, deque[Entry]] = {}  # stream mode: waiting entries per key

    def entries(self, fetched: list[Entry]) -> None:
        """Queue entries; in stream mode, one key runs one event at a time."""
        if self.mode == "queue":
            for entry in fetched:
                self._work.put(entry)
            return
        for entry_id, envelope in fetched:
            key = envelope.key or entry_id.decode()
            waiting = self._keys.get(key)
            if waiting is not None:
                waiting.append((entry_id, envelope))
            else:
                self._keys[key] = deque([(entry_id, envelope)])
                self._work.put(key)

    def batch(self, batch: list[Entry]) -> None:
        self._work.put(batch)

    def reset(self) -> None:
        """Forget a failed run's waiting work (its entries stay pending in Redis)."""
        self._keys.clear()
        self._work = Handoff()

    async def run_handler(self) -> None:
        """One handler task: take work and run it, for ever."""
        while True:
            item = await self._work.get()
            if isinstance(item, list):
                await self._handle(item)
                continue
            if isinstance(item, tuple):
                await self._handle([item])
                continue
            waiting = self._keys[item]
            while waiting:
                await self._handle([waiting[0]])
                waiting.popleft()
            del self._keys[item]
