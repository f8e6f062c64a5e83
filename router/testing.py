"""Test helpers shipped with the package: a fake clock whose time moves only when told to."""

from __future__ import annotations


class FakeClock:
    """A `router.clock.Clock` for tests: `advance()` moves both clocks, nothing else does."""

    def __init__(self, wall: float = 1_800_000_000.0, monotonic: float = 1_000.0) -> None:
        self._wall = wall
        self._monotonic = monotonic

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._wall += seconds
        self._monotonic += seconds
