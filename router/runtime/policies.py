"""A class's failure policies, kept out of the pool's engine: what becomes of a failed event
(retried with backoff, or a dead letter), and which events are too old to handle at all."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from router.runtime.context import NO_OUTPUTS
from router.runtime.done import Done
from router.streams.deadletters import failure_fields

if TYPE_CHECKING:
    from prometheus_client import Counter

    from router.clock import Clock
    from router.config import ClassConfig, RetryConfig
    from router.runtime.done import Entry
    from router.streams.envelope import Envelope
    from router.streams.transport import Fields


class Failures:
    """Retries with exponential backoff and jitter through the delay queue, up to
    `retry.max_attempts` runs; then, or at once for a final failure, a dead letter."""

    def __init__(self, retry: RetryConfig) -> None:
        self.retry = retry
        self._random = random.Random()

    def retries(self, done: Done, envelope: Envelope) -> bool:
        """Whether this failed event gets another attempt."""
        return not done.final and envelope.attempt + 1 < self.retry.max_attempts

    def settle(
        self, done: Done, now: float, retries: list[tuple[float, bytes]], dead: list[Fields]
    ) -> None:
        """Schedule each failed event's next attempt, or keep it as a dead letter."""
        assert done.error is not None
        for envelope in done.events:
            if self.retries(done, envelope):
                delay_s = self.retry.delay_s(envelope.attempt + 1, self._random.random())
                retries.append((now + delay_s, envelope.retried().encode()))
            else:
                dead.append(failure_fields(envelope, done.reason, done.error, now))


class Expiry:
    """`shed.action: expire`: events older than `max_age_ms` skip the handler and go to the dead
    letters as expired (counted), so a backlog does not delay fresh work."""

    def __init__(self, max_age_s: float, clock: Clock, expired: Counter) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._expired = expired

    @classmethod
    def of(cls, name: str, config: ClassConfig, clock: Clock, shed: Counter) -> Expiry | None:
        """The class's expiry, or None when it does not expire events."""
        settings = config.shed
        if settings is None or settings.action != "expire" or settings.max_age_ms is None:
            return None
        return cls(settings.max_age_ms / 1000, clock, shed.labels(name, "expire"))

    def split(self, batch: list[Entry]) -> tuple[list[Entry], Done | None]:
        """The entries still young enough to handle, and the expired ones as a final Done."""
        oldest_ok = self.clock.wall() - self.max_age_s
        stale = [(i, e) for i, e in batch if e.ingest_ts < oldest_ok]
        if not stale:
            return batch, None
        self._expired.inc(len(stale))
        error = TimeoutError(f"older than shed.max_age_ms={self.max_age_s * 1000:g}")
        expired = Done(
            [i for i, _ in stale], [e for _, e in stale], NO_OUTPUTS, error, "expired", True
        )
        return [(i, e) for i, e in batch if e.ingest_ts >= oldest_ok], expired
