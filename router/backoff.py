"""Jittered exponential backoff, shared by every reconnect and retry loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays that double from `initial` up to `maximum`, with full jitter; `reset()` on success."""

    initial: float = 0.05
    maximum: float = 5.0
    failures: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt, counting this failure."""
        ceiling = min(self.maximum, self.initial * (2**self.failures))
        self.failures += 1
        return self._random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
