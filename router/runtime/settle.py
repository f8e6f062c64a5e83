"""Settling: what handlers finished is made durable and acknowledged, a flush at a time.

One settler task per pool takes everything finished since its last flush, writes the
handlers' outputs (emits, appends) and then acks, retries or dead-letters every entry in one
transaction on the class's keys. One event's bad output, or an entry Redis will not settle,
is dealt with on its own and never fails the rest of the flush.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from router.backoff import Backoff
from router.runtime.context import NO_OUTPUTS
from router.streams.transport import UNAVAILABLE
from router.tasks import cancel_and_wait

if TYPE_CHECKING:
    from collections.abc import Callable

    import structlog

    from router.clock import Clock
    from router.metrics import Metrics
    from router.runtime.accounting import Accounting
    from router.runtime.done import Done
    from router.runtime.policies import Failures
    from router.runtime.slots import Slots
    from router.streams.transport import Fields, Transport


class Settler:
    """The settling task of one pool and the finished work waiting for it."""

    def __init__(
        self,
        tag: str,
        transport: Transport,
        slots: Slots,
        failures: Failures,
        accounting: Accounting,
        *,
        metrics: Metrics,
        clock: Clock,
        log: structlog.typing.FilteringBoundLogger,
        retried: Callable[[], None],
    ) -> None:
        self.tag = tag
        self.transport = transport
        self.slots = slots
        self.failures = failures
        self.accounting = accounting
        self.metrics = metrics
        self.clock = clock
        self.log = log
        self._retried = retried  # told when a retry entered the delay queue
        self._done: list[Done] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # no flush under way: the settling task may be ended
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def later(self, done: Done) -> None:
        """Hand finished entries to the settler."""
        self._done.append(done)
        if len(self._done) == 1:  # the settler takes the whole list: wake it once per list
            self._ready.set()

    def reset(self) -> None:
        self._done.clear()

    def start(self, name: str) -> None:
        """Start the settling task. It is not one of the pool's task group: a group cancels
        its tasks whenever one fails, and a flush cut short after it reached Redis would go
        uncounted. The pool ends it with `stop()`, between flushes."""
        self._task = asyncio.create_task(self.run(), name=name)

    async def stop(self) -> None:
        """End the settling task once no flush is under way: one under way finishes and is
        counted first (a round trip, bounded by its line's timeout)."""
        while not self._idle.is_set():
            await self._idle.wait()
        if self._task is not None:  # cancelled now, it is waiting: never inside a flush
            await cancel_and_wait(self._task)
            self._task = None

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._done = self._done, []
            while True:
                try:
                    await self._attempt(batch)
                    backoff.reset()
                    break
                except UNAVAILABLE as exc:
                    self.metrics.redis_errors.labels("ack").inc()
                    self.log.warning("redis unavailable, retrying ack", error=str(exc))
                    await asyncio.sleep(backoff.next_delay())
                except Exception:  # a bug: the entries stay pending, the pool goes on
                    self.log.exception("settling failed, the entries stay pending for reclaim")
                    self.slots.release([i for done in batch for i in done.entry_ids])
                    break

    async def _attempt(self, batch: list[Done]) -> None:
        """One flush, which `stop()` waits for."""
        self._idle.clear()
        try:
            await self._flush(batch)
        finally:
            self._idle.set()

    async def _flush(self, batch: list[Done]) -> None:
        """Write outputs first, then ack, retry or dead-letter every entry in one transaction."""
        written, repeated = await self._write_outputs(batch)
        settled = await self._settle(batch)
        self.accounting.account(settled, self.clock.wall(), written, repeated)
        self.slots.release([i for done in batch for i in done.entry_ids])

    async def _write_outputs(self, batch: list[Done]) -> tuple[Counter[str], Counter[str]]:
        """Write the finished events' emits, appends and record updates in one round trip;
        returns the emits written and repeated, by class. An event whose outputs Redis
        refuses (say a stream key of the wrong type) fails with that error; its neighbours'
        outputs stand."""
        writing = [done for done in batch if done.error is None and done.outputs]
        if not writing:
            return Counter(), Counter()
        emits = [emit for done in writing for _, emit in done.outputs.emits]
        writes = [write for done in writing for _, write in done.outputs.writes]
        written = await self.transport.write(emits, writes)
        stored: Counter[str] = Counter()
        repeated: Counter[str] = Counter()
        at_emit = at_write = 0
        for done in writing:
            own_emits, own_writes = done.outputs.emits, done.outputs.writes
            ids = written.ids[at_emit : at_emit + len(own_emits)]
            refusals = written.extras[at_write : at_write + len(own_writes)]
            at_emit, at_write = at_emit + len(own_emits), at_write + len(own_writes)
            refused = next((r for r in (*ids, *refusals) if isinstance(r, Exception)), None)
            if refused is not None:
                self.log.warning("redis refused an event's outputs", error=str(refused))
                done.error, done.reason, done.outputs = refused, "output_error", NO_OUTPUTS
                continue
            for (_, emit), stream_id in zip(own_emits, ids, strict=True):
                (stored if stream_id else repeated)[emit.cls] += 1
        return stored, repeated

    async def _settle(self, batch: list[Done]) -> list[Done]:
        """Ack, retry or dead-letter the entries in one transaction; returns what was settled.

        If Redis refuses the transaction (not for being away), each event is settled on its
        own, and one it still refuses stays pending: reclaimed later, then a poison entry.
        """
        try:
            await self._settle_together(batch)
        except UNAVAILABLE:
            raise
        except Exception:
            self.log.exception("redis refused a settle, settling entries one by one")
        else:
            return batch
        settled = []
        for done in batch:
            try:
                await self._settle_together([done])
            except UNAVAILABLE:
                raise
            except Exception:
                ids = [i.decode() for i in done.entry_ids]
                self.log.exception("entries could not be settled, they stay pending", entries=ids)
            else:
                settled.append(done)
        return settled

    async def _settle_together(self, batch: list[Done]) -> None:
        retries: list[tuple[float, bytes]] = []
        dead: list[Fields] = []
        now = self.clock.wall()
        for done in batch:
            if done.error is not None:
                self.failures.settle(done, now, retries, dead)
        entry_ids = [entry_id for done in batch for entry_id in done.entry_ids]
        await self.transport.settle(self.tag, entry_ids, retries, dead)
        if retries:
            self._retried()
