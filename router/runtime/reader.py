"""Reading: a pool fetches at most as many entries as it has free slots, so a backlog stays
in Redis; every so often it takes over entries a dead or stalled consumer left pending.

Entries are decoded here. A poison entry (delivered more than `max_deliveries` times) is held
like the rest and settled as a dead letter, so it is counted like any other; an entry with no
readable envelope has no event to count and is kept aside at once.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from router.backoff import Backoff
from router.clock import wait_set
from router.errors import DecodeError, PoisonEntry
from router.runtime.context import NO_OUTPUTS
from router.runtime.done import Done
from router.streams.envelope import Envelope
from router.streams.transport import UNAVAILABLE
from router.tasks import until_stopped

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Collection

    import structlog

    from router.clock import Clock
    from router.config import ClassConfig
    from router.metrics import Metrics
    from router.runtime.dispatch import Dispatcher
    from router.runtime.done import Entry
    from router.runtime.scheduler import LaneScheduler
    from router.runtime.settle import Settler
    from router.runtime.slots import Slots
    from router.streams.transport import Fields, Transport

LEASE_RECHECK_S = 0.1  # how often a pool whose lease is unsure looks again


class Reader:
    """The one reading task of a pool."""

    def __init__(
        self,
        tag: str,
        config: ClassConfig,
        transport: Transport,
        slots: Slots,
        scheduler: LaneScheduler,
        *,
        dispatcher: Dispatcher,
        settler: Settler,
        clock: Clock,
        metrics: Metrics,
        log: structlog.typing.FilteringBoundLogger,
        stopping: asyncio.Event,
        block_ms: int,
        leased: Callable[[], bool] | None = None,
    ) -> None:
        self.tag = tag
        self.config = config
        self.transport = transport
        self.slots = slots
        self.scheduler = scheduler
        self.dispatcher = dispatcher
        self.settler = settler
        self.clock = clock
        self.metrics = metrics
        self.log = log
        self.stopping = stopping
        self.block_ms = block_ms
        self.leased = leased  # an ordered partition's: read only while the lease is sure
        self._taken = 0  # entries the current round's reads hold
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0
        self._takeovers: deque[tuple[frozenset[str], int]] = deque()  # (alive, min idle ms)

    @property
    def claim_every_s(self) -> float:
        """How often to look for entries that a dead or stalled consumer left pending."""
        return max(0.05, self.config.claim_idle_ms / 2000)

    def take_over(self, alive: Collection[str], min_idle_ms: int = 0) -> None:
        """Take the pending entries of every other consumer not `alive`, before reading new
        ones: a dead instance's, or, for an ordered partition that just changed hands, all."""
        self._takeovers.append((frozenset(alive), min_idle_ms))

    async def run(self) -> None:
        """Read until the pool stops; then return, leaving the rest in Redis."""
        backoff = Backoff()
        while not self.stopping.is_set():
            if self.leased is not None and not self.leased():
                await wait_set(self.stopping, LEASE_RECHECK_S)  # renewals are failing
                continue
            granted = await self._admitted()
            if granted == 0:
                break
            self._taken = 0
            try:
                if self._takeovers:
                    await self._take_over(granted)
                elif self.clock.monotonic() >= self._next_claim:
                    await self._reclaim(granted)
                elif self.config.mode == "batch":
                    await self._read_batch(granted)
                else:
                    self.dispatcher.entries(await self._fetch(granted, self.block_ms))
                backoff.reset()
            except UNAVAILABLE as exc:
                self.metrics.redis_errors.labels("read").inc()
                self.log.warning("redis unavailable, retrying read", error=str(exc))
                await wait_set(self.stopping, backoff.next_delay())
            finally:
                self.scheduler.release(self.config.lane, granted - self._taken)

    async def _admitted(self) -> int:
        """Slots to fill now: the pool's own free slots, half its capacity at most
        (`Slots.per_fetch`), as far as the lane scheduler admits.

        0 means the pool is stopping.
        """
        full = self.slots.free < self.slots.unit
        if full and not await self.slots.wait_for_room(self.stopping):
            return 0
        want = min(self.slots.free, self.slots.per_fetch)
        lane = self.config.lane
        granted = self.scheduler.try_acquire(lane, want)  # the common, uncontended case
        if not granted:
            granted = await until_stopped(self.scheduler.acquire(lane, want), self.stopping) or 0
        return granted

    async def _fetch(self, count: int, block_ms: int) -> list[Entry]:
        """Read new entries; ones that are not envelopes go straight to the dead letters."""
        raw = await self.transport.read(self.tag, count, block_ms)
        return await self._accept([(entry_id, data, 1) for entry_id, data in raw])

    async def _take_over(self, free: int) -> None:
        """The oldest takeover asked for, a fetch's worth at a time, oldest entries first: in
        an ordered partition the taken entries run before anything newer of their keys."""
        alive, min_idle_ms = self._takeovers[0]
        claimed = await self.transport.claim_from(self.tag, alive, free, min_idle_ms)
        if len(claimed) < free:
            self._takeovers.popleft()  # nothing more to take
        if claimed:
            self.log.warning("took over another consumer's pending entries", count=len(claimed))
            self._hand_over(await self._accept(claimed))

    def _hand_over(self, entries: list[Entry]) -> None:
        """Entries taken over from another consumer, to the handlers in the class's mode."""
        if self.config.mode == "batch":
            size = self.slots.unit
            for start in range(0, len(entries), size):
                self.dispatcher.batch(entries[start : start + size])
        else:
            self.dispatcher.entries(entries)

    async def _reclaim(self, free: int) -> None:
        """Take over entries a dead consumer left pending; poison ones become dead letters."""
        self._next_claim = self.clock.monotonic() + self.claim_every_s
        self._claim_cursor, claimed = await self.transport.claim_idle(
            self.tag, self.config.claim_idle_ms, free, self._claim_cursor
        )
        if not claimed:
            return
        self.log.warning("reclaimed entries of a dead or stalled consumer", count=len(claimed))
        self._hand_over(await self._accept(claimed))

    async def _accept(self, raw: list[tuple[bytes, bytes | None, int]]) -> list[Entry]:
        """Decode fetched entries and hold them in flight; returns those to handle."""
        entries: list[Entry] = []
        unreadable: list[tuple[bytes, Fields]] = []
        held = self.slots.held
        for entry_id, data, delivered in raw:
            try:
                envelope = Envelope.decode(data or b"")
            except DecodeError as exc:
                unreadable.append(_undecodable(entry_id, data, exc, self.clock.wall()))
                continue
            held.add(entry_id)
            if delivered > 1:
                self.slots.redelivered.add(entry_id)
            self._taken += 1
            if delivered > self.config.max_deliveries:
                error = PoisonEntry(delivered, self.config.max_deliveries)
                self.settler.later(Done([entry_id], [envelope], NO_OUTPUTS, error, "poison", True))
            else:
                entries.append((entry_id, envelope))
        if unreadable:
            self.metrics.rejected.labels("decode_error").inc(len(unreadable))
            await self.transport.settle(
                self.tag, [i for i, _ in unreadable], dead=[f for _, f in unreadable]
            )
        return entries

    async def _read_batch(self, limit: int) -> None:
        """Gather up to `max_size` (and `limit`) entries, or fewer once `max_wait_ms` passed
        since the first."""
        settings = self.config.batch_or_default
        size = min(settings.max_size, limit)
        batch: list[Entry] = []
        deadline: float | None = None
        while self._taken < size and not self.stopping.is_set():
            block_ms = self.block_ms
            if deadline is not None:
                remaining_ms = int((deadline - self.clock.monotonic()) * 1000)
                if remaining_ms < 1:
                    break
                block_ms = min(block_ms, remaining_ms)  # so a stop is noticed within block_ms
            try:
                fetched = await self._fetch(size - self._taken, block_ms)
            except UNAVAILABLE:
                if not batch:
                    raise
                break  # hand over what we have; the next read meets the outage again
            if not fetched and not batch:
                break  # nothing waiting: back to the loop, which also takes over and reclaims
            if fetched and deadline is None:
                deadline = self.clock.monotonic() + settings.max_wait_ms / 1000
            batch.extend(fetched)
        if batch:
            self.dispatcher.batch(batch)


def _undecodable(
    entry_id: bytes, data: bytes | None, exc: DecodeError, now: float
) -> tuple[bytes, Fields]:
    """A dead letter for an entry no envelope can be read from: its raw bytes and the error."""
    fields: dict[str, str | bytes | float] = {
        "entry_id": entry_id,
        "reason": "decode_error",
        "error": exc.reason,
        "failed_ts": now,
    }
    if data is not None:
        fields["raw"] = data
    return entry_id, fields
