"""Injected time: monotonic for durations, wall time only for what crosses processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    """What Switchyard asks of time; tests pass a `router.testing.FakeClock`."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for durations and deadlines."""
        ...

    def wall(self) -> float:
        """Unix seconds, for timestamps that other processes read."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


async def wait_set(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait until `event` is set, at most `timeout_s` (None: no limit); True if it was set.

    asyncio.timeout, not asyncio.wait_for: on Python 3.11 a cancel that lands as wait_for's
    inner wait completes is lost, and a task its TaskGroup cancelled once then runs for ever.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()
