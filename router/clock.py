"""Injected time: monotonic for durations, wall time only for what crosses processes."""

from __future__ import annotations

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
