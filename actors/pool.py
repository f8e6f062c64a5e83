"""The actor pool: runs one class's actor over its stream in stream, queue or batch mode.

Flow inside a pool: one reader fetches at most as many entries as the pool has free slots
(a backlog stays in Redis) and, every so often, takes over entries a dead consumer left
pending; workers run the actor; one acker writes each finished event's outputs and then
settles a whole batch of entries (ack, retry into the delay queue, or dead letter) in one
transaction. Side tasks renew the lease of entries still being handled and move due
delayed events back into the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from actors.api import Actor
from actors.context import NO_OUTPUTS, EventContext, Outputs
from router.backoff import Backoff
from router.clock import Clock, wait_set
from router.deadletters import failure_fields
from router.envelope import Envelope
from router.errors import ActorLoadError, DecodeError, PermanentFailure, PoisonEntry
from router.metrics import Metrics, Observations, SlaWindow
from router.transport import UNAVAILABLE, Fields, Transport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine

    from router.config import ClassConfig, ShedConfig
    from router.ingest import Ingest
    from router.scheduler import LaneScheduler
from router.tasks import cancel_and_wait, until_stopped

Entry = tuple[bytes, Envelope]
PROMOTE_POLL_S = 0.25  # how soon a delayed event scheduled elsewhere is noticed


def load_actor(path: str, options: dict[str, Any]) -> Actor:
    """Import `module:Class` and build it with the class's options."""
    module_name, _, name = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ActorLoadError(path, str(exc)) from exc
    if not (isinstance(factory, type) and issubclass(factory, Actor)):
        raise ActorLoadError(path, "not a subclass of actors.api.Actor")
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise ActorLoadError(path, f"bad options: {exc}") from exc


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


@dataclass(slots=True)
class Done:
    """Entries whose handling finished, waiting for their outputs to be written and settled."""

    entry_ids: list[bytes]
    events: list[Envelope]
    outputs: Outputs
    error: BaseException | None = None
    reason: str = "handler_error"
    final: bool = False  # no retry: straight to the dead letters (expired events)
    started: float | None = None  # wall time the handler started; None if it never ran
    handler_s: float = 0.0

    @classmethod
    def failed(
        cls,
        entry_ids: list[bytes],
        events: list[Envelope],
        error: BaseException,
        started: float | None = None,
        handler_s: float = 0.0,
    ) -> Done:
        """Failed handling, without outputs: a PermanentFailure goes to the dead letters at
        once, anything else is retried."""
        permanent = isinstance(error, PermanentFailure)
        reason = "permanent" if permanent else "handler_error"
        return cls(entry_ids, events, NO_OUTPUTS, error, reason, permanent, started, handler_s)


class Pool:
    """One class's actor pool inside this process."""

    def __init__(
        self,
        *,
        cls: str,
        config: ClassConfig,
        actor: Actor,
        transport: Transport,
        ingest: Ingest,
        metrics: Metrics,
        clock: Clock,
        scheduler: LaneScheduler,
        block_ms: int = 500,
    ) -> None:
        self.cls = cls
        self.scheduler = scheduler
        self.config = config
        self.actor = actor
        self.transport = transport
        self.ingest = ingest
        self.metrics = metrics
        self.clock = clock
        self.block_ms = block_ms
        self.log = structlog.get_logger("switchyard.pool").bind(**{"class": cls})
        self.batch_size = config.batch_size
        self.capacity = config.capacity
        self.claim_every_s = max(0.05, config.claim_idle_ms / 2000)
        self.timeout_s = config.timeout_ms / 1000 if config.timeout_ms else None
        # The actor's entry point, called without a coroutine of the pool's own around it.
        self._invoke = self._handle_many if config.mode == "batch" else self._handle_one
        self._batches = actor.handles_batches()
        self._max_age_s = _expiry_s(config.shed)
        self.running = False
        self._held: set[bytes] = set()  # entry ids fetched and not yet settled
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._work = Handoff()
        self._keys: dict[str, deque[Entry]] = {}
        self._done: list[Done] = []
        self._done_ready = asyncio.Event()
        self._scheduled = asyncio.Event()  # a retry entered this class's delay queue
        self._taken = 0
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0
        self._random = random.Random()
        lane = config.lane
        self._latency = Observations(metrics.latency.labels(cls, lane))
        self._queue_wait = Observations(metrics.queue_wait.labels(cls, lane))
        self._handler = Observations(metrics.handler.labels(cls))
        self._inflight_gauge = metrics.inflight.labels(cls)
        self._processed = {o: metrics.processed.labels(cls, o) for o in ("ok", "retried", "dead")}
        self._source_latency = Observations(metrics.source_latency.labels(cls, lane))
        self._breaches = metrics.sla_breaches.labels(cls)
        self.sla_window = SlaWindow()

    @property
    def inflight(self) -> int:
        """Entries fetched and not yet settled."""
        return len(self._held)

    # --- lifecycle ---

    async def run(self) -> None:
        """Run until `stop()` and then drain: finish what was fetched, settle it, return."""
        self._reset()
        await self.transport.ensure_group(self.cls)
        await self.actor.start()
        self.running = True
        try:
            async with asyncio.TaskGroup() as group:
                helpers = [
                    group.create_task(self._worker(), name=f"pool:{self.cls}:worker:{n}")
                    for n in range(self.config.concurrency)
                ]
                helpers.append(group.create_task(self._acker(), name=f"pool:{self.cls}:acker"))
                helpers.append(group.create_task(self._leases(), name=f"pool:{self.cls}:leases"))
                helpers.append(group.create_task(self._promoter(), name=f"pool:{self.cls}:delay"))
                await self._reader()
                await self._wait_idle()
                await cancel_and_wait(*helpers)
        finally:
            self.running = False
            await self.actor.stop()

    def _reset(self) -> None:
        """Forget a failed run's in-process state; its fetched entries stay pending in Redis."""
        self.scheduler.release(self.config.lane, self.inflight)
        self._held.clear()
        self._keys.clear()
        self._done.clear()
        self._work = Handoff()

    def stop(self) -> None:
        """Stop fetching; `run()` returns once what was fetched is handled and settled."""
        self._stopping.set()

    async def _wait_idle(self) -> None:
        while self.inflight:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _pause(self, seconds: float) -> None:
        await wait_set(self._stopping, seconds)

    # --- reading ---

    async def _reader(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            granted = await self._admitted()
            if granted == 0:
                break
            self._taken = 0  # entries the reads below hold, counted by _accept
            try:
                if self.clock.monotonic() >= self._next_claim:
                    await self._reclaim(granted)
                elif self.config.mode == "batch":
                    await self._read_batch(granted)
                else:
                    self._dispatch(await self._fetch(granted, self.block_ms))
                backoff.reset()
            except UNAVAILABLE as exc:
                self.metrics.redis_errors.labels("read").inc()
                self.log.warning("redis unavailable, retrying read", error=str(exc))
                await self._pause(backoff.next_delay())
            finally:
                self.scheduler.release(self.config.lane, granted - self._taken)

    async def _admitted(self) -> int:
        """Slots to fill now: the pool's own free slots, as far as the lane scheduler admits.

        0 means the pool is stopping.
        """
        while self.capacity - self.inflight < self.batch_size:
            if not await self._until_stopped(self._slot_freed_wait()):
                return 0
        want = self.capacity - self.inflight
        granted = self.scheduler.try_acquire(self.config.lane, want)  # the common, uncontended case
        if not granted:
            granted = await self._until_stopped(self.scheduler.acquire(self.config.lane, want)) or 0
        return granted

    async def _slot_freed_wait(self) -> int:
        self._slot_freed.clear()
        await self._slot_freed.wait()
        return 1

    async def _until_stopped(self, waiting: Coroutine[Any, Any, int]) -> int | None:
        """The result of `waiting`, or None when the pool is told to stop first."""
        return await until_stopped(waiting, self._stopping)

    async def _fetch(self, count: int, block_ms: int) -> list[Entry]:
        """Read new entries; ones that are not envelopes go straight to the dead letters."""
        raw = await self.transport.read(self.cls, count, block_ms)
        return await self._accept([(entry_id, data, 1) for entry_id, data in raw])

    async def _reclaim(self, free: int) -> None:
        """Take over entries a dead consumer left pending; poison ones become dead letters."""
        self._next_claim = self.clock.monotonic() + self.claim_every_s
        self._claim_cursor, claimed = await self.transport.claim_idle(
            self.cls, self.config.claim_idle_ms, free, self._claim_cursor
        )
        if not claimed:
            return
        self.log.warning("reclaimed entries of a dead or stalled consumer", count=len(claimed))
        entries = await self._accept(claimed)
        if self.config.mode == "batch":
            for start in range(0, len(entries), self.batch_size):
                self._work.put(entries[start : start + self.batch_size])
        else:
            self._dispatch(entries)

    async def _accept(self, raw: list[tuple[bytes, bytes | None, int]]) -> list[Entry]:
        """Decode fetched entries and count them in flight; returns those to handle.

        A poison entry (delivered more than `max_deliveries` times) is held like the rest and
        settled by the acker as a dead letter, so it is counted like any other dead letter.
        An entry with no readable envelope has no event to count: it is kept aside at once.
        """
        entries: list[Entry] = []
        unreadable: list[tuple[bytes, Fields]] = []
        for entry_id, data, delivered in raw:
            try:
                envelope = Envelope.decode(data or b"")
            except DecodeError as exc:
                unreadable.append(_undecodable(entry_id, data, exc, self.clock.wall()))
                continue
            self._held.add(entry_id)
            self._taken += 1
            if delivered > self.config.max_deliveries:
                error = PoisonEntry(delivered, self.config.max_deliveries)
                self._settle_later(Done([entry_id], [envelope], NO_OUTPUTS, error, "poison", True))
            else:
                entries.append((entry_id, envelope))
        self._inflight_gauge.set(self.inflight)
        if unreadable:
            self.metrics.rejected.labels("decode_error").inc(len(unreadable))
            await self.transport.settle(
                self.cls, [i for i, _ in unreadable], dead=[f for _, f in unreadable]
            )
        return entries

    async def _read_batch(self, limit: int) -> None:
        """Gather up to `max_size` (and `limit`) entries, or fewer once `max_wait_ms` passed
        since the first."""
        settings = self.config.batch_or_default
        size = min(settings.max_size, limit)
        batch: list[Entry] = []
        deadline: float | None = None
        while self._taken < size and not self._stopping.is_set():
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
            if fetched and deadline is None:
                deadline = self.clock.monotonic() + settings.max_wait_ms / 1000
            batch.extend(fetched)
        if batch:
            self._work.put(batch)

    def _dispatch(self, fetched: list[Entry]) -> None:
        """Queue entries for the workers; in stream mode, one key runs one event at a time."""
        if self.config.mode == "queue":
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

    # --- handling ---

    async def _worker(self) -> None:
        while True:
            item = await self._work.get()
            if isinstance(item, list):
                await self._handle_batch(item)
                continue
            if isinstance(item, tuple):
                await self._handle_batch([item])
                continue
            waiting = self._keys[item]
            while waiting:
                await self._handle_batch([waiting[0]])
                waiting.popleft()
            del self._keys[item]

    async def _handle_batch(self, batch: list[Entry]) -> None:
        """Run the actor on one entry (stream, queue) or a batch, within `timeout_ms`."""
        if self._max_age_s is not None:
            batch = self._without_expired(batch, self._max_age_s)
            if not batch:
                return
        if len(batch) == 1:  # stream and queue mode: no comprehensions (each a call on 3.11)
            entry_ids, events = [batch[0][0]], [batch[0][1]]
        else:
            entry_ids, events = [i for i, _ in batch], [e for _, e in batch]
        first = events[0]
        ctx = EventContext(self.cls, first, self.ingest, self.log, batch=len(events) > 1)
        clock = self.clock
        started_wall, started = clock.wall(), clock.monotonic()
        error: BaseException | None = None
        try:
            if self.timeout_s is None:
                await self._invoke(events, ctx)
            else:
                async with asyncio.timeout(self.timeout_s):
                    await self._invoke(events, ctx)
        except TimeoutError as exc:
            error = TimeoutError(f"handler took longer than timeout_ms={self.config.timeout_ms}")
            error.__cause__ = exc
        except Exception as exc:  # any handler failure is the event's, not the pool's
            error = exc
        timing = (started_wall, clock.monotonic() - started)
        if error is not None:  # a failed handler's outputs are not written
            ctx.log.warning(
                "handler failed", error=repr(error), attempt=first.attempt, events=len(events)
            )
            self._settle_later(Done.failed(entry_ids, events, error, *timing))
            return
        outputs = ctx.outputs
        if not outputs.failures:
            self._settle_later(Done(entry_ids, events, outputs, None, "", False, *timing))
            return
        self._settle_members(entry_ids, events, outputs, timing)

    def _settle_members(
        self,
        entry_ids: list[bytes],
        events: list[Envelope],
        outputs: Outputs,
        timing: tuple[float, float],
    ) -> None:
        """A batch some members of which failed (`ctx.fail`): each failed member is settled
        on its own, without its outputs; the rest as one, with theirs."""
        failed = outputs.failures
        kept = [(i, e) for i, e in zip(entry_ids, events, strict=True) if e.id not in failed]
        for entry_id, event in zip(entry_ids, events, strict=True):
            if event.id in failed:
                error = failed[event.id]
                self.log.warning(
                    "batch member failed",
                    event_id=event.id,
                    error=repr(error),
                    attempt=event.attempt,
                )
                self._settle_later(Done.failed([entry_id], [event], error, *timing))
        if kept:
            rest = outputs.without(set(failed))
            ids, members = [i for i, _ in kept], [e for _, e in kept]
            self._settle_later(Done(ids, members, rest, None, "", False, *timing))

    def _settle_later(self, done: Done) -> None:
        """Hand finished entries to the acker."""
        self._done.append(done)
        if len(self._done) == 1:  # the acker takes the whole list: wake it once per list
            self._done_ready.set()

    def _handle_one(self, events: list[Envelope], ctx: EventContext) -> Awaitable[None]:
        return self.actor.handle(events[0], ctx)

    def _handle_many(self, events: list[Envelope], ctx: EventContext) -> Awaitable[None]:
        if self._batches:
            return self.actor.handle_batch(events, ctx)
        return self._handle_each(events, ctx)

    async def _handle_each(self, events: list[Envelope], ctx: EventContext) -> None:
        """Batch mode for an actor that handles one event at a time: each member in order,
        with a context of its own; a member that raises fails alone."""
        for event in events:
            try:
                await self.actor.handle(event, ctx.member(event))
            except Exception as exc:  # the member's failure, not the batch's
                ctx.fail(event, exc)

    def _without_expired(self, batch: list[Entry], max_age_s: float) -> list[Entry]:
        """With `shed.action: expire`, events older than `max_age_ms` skip the handler and go
        to the dead letters as expired (counted), so a backlog does not delay fresh work."""
        oldest_ok = self.clock.wall() - max_age_s
        stale = [(i, e) for i, e in batch if e.ingest_ts < oldest_ok]
        if not stale:
            return batch
        self.metrics.shed.labels(self.cls, "expire").inc(len(stale))
        error = TimeoutError(f"older than shed.max_age_ms={max_age_s * 1000:g}")
        self._settle_later(
            Done([i for i, _ in stale], [e for _, e in stale], NO_OUTPUTS, error, "expired", True)
        )
        return [(i, e) for i, e in batch if e.ingest_ts >= oldest_ok]

    # --- settling ---

    async def _acker(self) -> None:
        backoff = Backoff()
        while True:
            await self._done_ready.wait()
            self._done_ready.clear()
            batch, self._done = self._done, []
            while True:
                try:
                    # Shielded: a settle that reached Redis must also be counted here.
                    await asyncio.shield(self._flush(batch))
                    backoff.reset()
                    break
                except UNAVAILABLE as exc:
                    self.metrics.redis_errors.labels("ack").inc()
                    self.log.warning("redis unavailable, retrying ack", error=str(exc))
                    await asyncio.sleep(backoff.next_delay())
                except Exception:  # a bug: the entries stay pending, the pool goes on
                    self.log.exception("settling failed, the entries stay pending for reclaim")
                    self._release([i for done in batch for i in done.entry_ids])
                    break

    async def _flush(self, batch: list[Done]) -> None:
        """Write outputs first, then ack, retry or dead-letter every entry in one transaction.

        One event's bad output, or an entry Redis will not settle, is dealt with on its own:
        it never fails the rest of the flush.
        """
        written, repeated = await self._write_outputs(batch)
        settled = await self._settle(batch)
        self._account(settled, self.clock.wall(), written, repeated)
        self._release([i for done in batch for i in done.entry_ids])

    def _release(self, entry_ids: list[bytes]) -> None:
        """Entries settled (or left pending for reclaim): their slots are free again."""
        self._held.difference_update(entry_ids)
        self.scheduler.release(self.config.lane, len(entry_ids))
        self._inflight_gauge.set(self.inflight)
        self._slot_freed.set()

    async def _write_outputs(self, batch: list[Done]) -> tuple[Counter[str], Counter[str]]:
        """Write the finished events' emits and appends; returns emits written and repeated,
        by class. If Redis refuses the lot (not for being away), each event's outputs are
        written on their own, and an event whose outputs are refused fails with that error."""
        writing = [done for done in batch if done.error is None and done.outputs]
        if not writing:
            return Counter(), Counter()
        try:
            return await self._publish_outputs(writing)
        except UNAVAILABLE:
            raise
        except Exception:
            self.log.exception("redis refused a flush's outputs, writing them event by event")
        written: Counter[str] = Counter()
        repeated: Counter[str] = Counter()
        for done in writing:
            try:
                one_written, one_repeated = await self._publish_outputs([done])
            except UNAVAILABLE:
                raise
            except Exception as exc:
                done.error, done.reason, done.outputs = exc, "output_error", NO_OUTPUTS
                continue
            written.update(one_written)
            repeated.update(one_repeated)
        return written, repeated

    async def _publish_outputs(self, batch: list[Done]) -> tuple[Counter[str], Counter[str]]:
        emits = [emit for done in batch for _, emit in done.outputs.emits]
        appends = [append for done in batch for _, append in done.outputs.appends]
        ids = await self.transport.publish(emits, appends)
        written, repeated = Counter[str](), Counter[str]()
        for emit, stream_id in zip(emits, ids, strict=True):
            (written if stream_id else repeated)[emit.cls] += 1
        return written, repeated

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
                self._fail(done, now, retries, dead)
        entry_ids = [entry_id for done in batch for entry_id in done.entry_ids]
        await self.transport.settle(self.cls, entry_ids, retries, dead)
        if retries:
            self._scheduled.set()

    def _fail(
        self, done: Done, now: float, retries: list[tuple[float, bytes]], dead: list[Fields]
    ) -> None:
        """Schedule a failed event's next attempt, or keep it as a dead letter after the last."""
        assert done.error is not None
        policy = self.config.retry
        for envelope in done.events:
            failures = envelope.attempt + 1
            if self._retries(done, envelope):
                due = now + policy.delay_s(failures, self._random.random())
                retries.append((due, envelope.retried().encode()))
            else:
                dead.append(failure_fields(envelope, done.reason, done.error, now))

    def _publish_counts(
        self, outcomes: dict[str, int], written: Counter[str], repeated: Counter[str]
    ) -> None:
        """Metrics gathered over one flush, applied once."""
        for observations in (self._latency, self._source_latency, self._queue_wait, self._handler):
            observations.flush()
        for outcome, count in outcomes.items():
            if count:
                self._processed[outcome].inc(count)
        for cls, count in written.items():
            self.metrics.ingested.labels(cls, "emit").inc(count)
        for cls, count in repeated.items():
            self.metrics.deduplicated.labels(cls, "emit").inc(count)

    def _retries(self, done: Done, envelope: Envelope) -> bool:
        return not done.final and envelope.attempt + 1 < self.config.retry.max_attempts

    def _account(
        self, batch: list[Done], now: float, written: Counter[str], repeated: Counter[str]
    ) -> None:
        """Outcomes, latency and SLA bookkeeping of settled entries; metrics once per flush."""
        target = self.config.sla.target_ms / 1000 if self.config.sla else float("inf")
        outcomes = {"ok": 0, "retried": 0, "dead": 0}
        latencies: list[float] = []
        source_latencies: list[float] = []
        queue_waits: list[float] = []
        handler_times: list[float] = []
        for done in batch:
            if done.started is not None:
                handler_times.append(done.handler_s)
                queue_waits += [done.started - e.ingest_ts for e in done.events]
            if done.error is None:
                latencies += [now - e.ingest_ts for e in done.events]
                stamped = [e.source_ts for e in done.events if e.source_ts is not None]
                source_latencies += [now - source_ts for source_ts in stamped]
                outcomes["ok"] += len(done.events)
            else:
                self._count_failed(done, outcomes)
        self._latency.add_all(latencies)
        self._source_latency.add_all(source_latencies)
        self._queue_wait.add_all(queue_waits)
        self._handler.add_all(handler_times)
        self._publish_counts(outcomes, written, repeated)
        if self.config.sla:
            late = sum(latency > target for latency in latencies)
            missed = late + outcomes["dead"]  # a dead letter never met its target
            self.sla_window.record(self.clock.monotonic(), outcomes["ok"] - late, missed)
            if missed:
                self._breaches.inc(missed)

    def _count_failed(self, done: Done, outcomes: dict[str, int]) -> None:
        for envelope in done.events:
            if self._retries(done, envelope):
                outcomes["retried"] += 1
                continue
            outcomes["dead"] += 1
            self.log.error(
                "event dead-lettered",
                event_id=envelope.id,
                reason=done.reason,
                attempts=envelope.attempt + 1,
            )

    # --- side tasks ---

    async def _leases(self) -> None:
        """Keep entries of slow handlers ours: reset their idle time well before claim_idle."""
        every = self.config.claim_idle_ms / 3000
        while True:
            await asyncio.sleep(every)
            if self._held:
                with contextlib.suppress(*UNAVAILABLE):
                    await self.transport.renew(self.cls, list(self._held))

    async def _promoter(self) -> None:
        """Move due events of the delay queue into the stream (retries, timed waits)."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            self._scheduled.clear()  # before the round trip, so a retry settled meanwhile wakes us
            try:
                moved, next_due = await self.transport.promote_due(self.cls)
                backoff.reset()
            except UNAVAILABLE:
                await asyncio.sleep(backoff.next_delay())
                continue
            if moved:
                continue
            # Sleep until the next due event, and wake early when this pool schedules a retry;
            # the poll bound catches what other instances and classes schedule.
            wait = PROMOTE_POLL_S if next_due is None else next_due - self.clock.wall()
            await wait_set(self._scheduled, min(PROMOTE_POLL_S, max(0.005, wait)))

    def snapshot(self) -> dict[str, Any]:
        return {
            "lane": self.config.lane,
            "mode": self.config.mode,
            "concurrency": self.config.concurrency,
            "inflight": self.inflight,
            "running": self.running,
        }


def _expiry_s(shed: ShedConfig | None) -> float | None:
    """The age in seconds past which events skip the handler (`shed.action: expire`)."""
    if shed is None or shed.action != "expire" or shed.max_age_ms is None:
        return None
    return shed.max_age_ms / 1000


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
