"""The actor pool: runs one class's actor over its stream in stream, queue or batch mode.

Flow inside a pool: one reader fetches at most as many entries as the pool has free slots
(a backlog stays in Redis), workers run the actor, and one acker writes each finished event's
outputs and then acknowledges a whole batch of entries in as few round trips as possible.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import structlog

from actors.api import Actor, StreamFields
from router import keys
from router.backoff import Backoff
from router.clock import Clock
from router.config import ClassConfig
from router.envelope import Envelope, child_event_id
from router.errors import ActorLoadError, DecodeError, UnknownTarget
from router.ingest import Ingest
from router.metrics import Metrics
from router.transport import UNAVAILABLE, Fields, Transport


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


@dataclass(slots=True)
class Outputs:
    """What a handler asked to write; made durable before its events are acknowledged."""

    emits: list[Envelope] = field(default_factory=list)
    appends: list[tuple[str, StreamFields]] = field(default_factory=list)


class EventContext:
    """The `actors.api.Context` handed to a handler for one event or one batch."""

    def __init__(
        self, cls: str, parent: Envelope, ingest: Ingest, log: structlog.typing.FilteringBoundLogger
    ) -> None:
        self._cls = cls
        self._parent = parent
        self._ingest = ingest
        self._log = log
        self._children: dict[str, int] = {}
        self.outputs = Outputs()

    @property
    def cls(self) -> str:
        return self._cls

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        return self._log

    def emit(
        self, target: str, payload: Any, *, key: str | None = None, parent: Envelope | None = None
    ) -> str:
        parent = parent or self._parent
        index = self._children[parent.id] = self._children.get(parent.id, -1) + 1
        event_id = child_event_id(parent.id, index)
        source = f"emit:{self._cls}"
        if target in self._ingest.config.classes:
            envelope = self._ingest.for_class(
                target, payload, key=key if key is not None else parent.key,
                source=source, event_id=event_id, source_ts=parent.source_ts,
            )  # fmt: skip
        else:
            routed = self._ingest.for_topic(target, payload, source=source, event_id=event_id)
            if routed is None:
                raise UnknownTarget(target)
            envelope = routed
        self.outputs.emits.append(envelope)
        return envelope.id

    def append(self, stream: str, fields: StreamFields) -> None:
        self.outputs.appends.append((stream, fields))


@dataclass(slots=True)
class Done:
    """Entries whose handling finished, waiting for their outputs to be written and their ack."""

    entry_ids: list[bytes]
    events: list[Envelope]
    outputs: Outputs
    error: BaseException | None = None


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
        block_ms: int = 500,
    ) -> None:
        self.cls = cls
        self.config = config
        self.actor = actor
        self.transport = transport
        self.ingest = ingest
        self.metrics = metrics
        self.clock = clock
        self.block_ms = block_ms
        self.log = structlog.get_logger("switchyard.pool").bind(**{"class": cls})
        self.batch_size = config.batch_or_default.max_size if config.mode == "batch" else 1
        self.capacity = config.concurrency * self.batch_size
        self.inflight = 0
        self.running = False
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._work: asyncio.Queue[Any] = asyncio.Queue(maxsize=config.concurrency)
        self._keys: dict[str, deque[tuple[bytes, Envelope]]] = {}
        self._done: list[Done] = []
        self._done_ready = asyncio.Event()
        self._drained = asyncio.Event()
        lane = config.lane
        self._latency = metrics.latency.labels(cls, lane)
        self._queue_wait = metrics.queue_wait.labels(cls, lane)
        self._handler = metrics.handler.labels(cls)
        self._inflight_gauge = metrics.inflight.labels(cls)
        self._processed = {o: metrics.processed.labels(cls, o) for o in ("ok", "dead")}

    # --- lifecycle ---

    async def run(self) -> None:
        """Run until `stop()` and then drain: finish what was fetched, ack it, return."""
        self._reset()
        await self.transport.ensure_group(self.cls)
        await self.actor.start()
        self.running = True
        try:
            async with asyncio.TaskGroup() as group:
                workers = [
                    group.create_task(self._worker(), name=f"pool:{self.cls}:worker:{n}")
                    for n in range(self.config.concurrency)
                ]
                acker = group.create_task(self._acker(), name=f"pool:{self.cls}:acker")
                await self._reader()
                await self._wait_idle()
                for task in (*workers, acker):
                    task.cancel()
        finally:
            self.running = False
            await self.actor.stop()

    def _reset(self) -> None:
        """Forget a failed run's in-process state; its fetched entries stay pending in Redis."""
        self.inflight = 0
        self._keys.clear()
        self._done.clear()
        self._work = asyncio.Queue(maxsize=self.config.concurrency)

    def stop(self) -> None:
        """Stop fetching; `run()` returns once what was fetched is handled and acknowledged."""
        self._stopping.set()

    async def _wait_idle(self) -> None:
        while self.inflight:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    # --- reading ---

    async def _reader(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            free = await self._free_slots()
            if free == 0:
                break
            try:
                if self.config.mode == "batch":
                    await self._read_batch()
                else:
                    self._dispatch(await self._fetch(free, self.block_ms))
                backoff.reset()
            except UNAVAILABLE as exc:
                self.metrics.redis_errors.labels("read").inc()
                self.log.warning("redis unavailable, retrying read", error=str(exc))
                await self._pause(backoff.next_delay())

    async def _free_slots(self) -> int:
        """Wait until at least one unit of work fits; 0 means the pool is stopping."""
        while self.capacity - self.inflight < self.batch_size:
            self._slot_freed.clear()
            waiter = asyncio.ensure_future(self._slot_freed.wait())
            stopper = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
            if self._stopping.is_set():
                return 0
        return self.capacity - self.inflight

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _fetch(self, count: int, block_ms: int) -> list[tuple[bytes, Envelope]]:
        """Read and decode; entries that are not envelopes go straight to the dead-letter stream."""
        fetched = []
        for entry_id, data in await self.transport.read(self.cls, count, block_ms):
            try:
                fetched.append((entry_id, Envelope.decode(data or b"")))
            except DecodeError as exc:
                await self._dead_letter_raw(entry_id, data, exc)
        self.inflight += len(fetched)
        self._inflight_gauge.set(self.inflight)
        return fetched

    async def _read_batch(self) -> None:
        """Gather up to `max_size` entries, or fewer once `max_wait_ms` passed since the first."""
        settings = self.config.batch_or_default
        batch: list[tuple[bytes, Envelope]] = []
        deadline: float | None = None
        while len(batch) < settings.max_size and not self._stopping.is_set():
            block_ms = self.block_ms
            if deadline is not None:
                remaining_ms = int((deadline - self.clock.monotonic()) * 1000)
                if remaining_ms < 1:
                    break
                block_ms = min(block_ms, remaining_ms)  # so a stop is noticed within block_ms
            try:
                fetched = await self._fetch(settings.max_size - len(batch), block_ms)
            except UNAVAILABLE:
                if batch:
                    self._work.put_nowait(batch)  # hand over what we have before backing off
                raise
            if fetched and deadline is None:
                deadline = self.clock.monotonic() + settings.max_wait_ms / 1000
            batch.extend(fetched)
        if batch:
            self._work.put_nowait(batch)

    def _dispatch(self, fetched: list[tuple[bytes, Envelope]]) -> None:
        """Queue entries for the workers; in stream mode, one key runs one event at a time."""
        ordered = self.config.mode == "stream"
        for entry_id, envelope in fetched:
            key = (envelope.key or entry_id.decode()) if ordered else entry_id.decode()
            waiting = self._keys.get(key)
            if waiting is not None:
                waiting.append((entry_id, envelope))
            else:
                self._keys[key] = deque([(entry_id, envelope)])
                self._work.put_nowait(key)

    # --- handling ---

    async def _worker(self) -> None:
        while True:
            item = await self._work.get()
            if isinstance(item, list):
                await self._handle_batch(item)
                continue
            waiting = self._keys[item]
            while waiting:
                entry_id, envelope = waiting[0]
                await self._handle_one(entry_id, envelope)
                waiting.popleft()
            del self._keys[item]

    async def _handle_one(self, entry_id: bytes, envelope: Envelope) -> None:
        ctx = EventContext(self.cls, envelope, self.ingest, self.log.bind(event_id=envelope.id))
        started = self.clock.monotonic()
        self._queue_wait.observe(max(0.0, self.clock.wall() - envelope.ingest_ts))
        error: BaseException | None = None
        try:
            await self.actor.handle(envelope, ctx)
        except Exception as exc:
            error = exc
        self._handler.observe(self.clock.monotonic() - started)
        self._finish(Done([entry_id], [envelope], ctx.outputs, error))

    async def _handle_batch(self, batch: list[tuple[bytes, Envelope]]) -> None:
        events = [envelope for _, envelope in batch]
        ctx = EventContext(self.cls, events[0], self.ingest, self.log.bind(batch_size=len(events)))
        now = self.clock.wall()
        for envelope in events:
            self._queue_wait.observe(max(0.0, now - envelope.ingest_ts))
        started = self.clock.monotonic()
        error: BaseException | None = None
        try:
            await self.actor.handle_batch(events, ctx)
        except Exception as exc:
            error = exc
        self._handler.observe(self.clock.monotonic() - started)
        self._finish(Done([entry_id for entry_id, _ in batch], events, ctx.outputs, error))

    def _finish(self, done: Done) -> None:
        if done.error is not None:
            done.outputs = Outputs()  # a failed handler's emits are not written
            for envelope in done.events:
                self.log.error(
                    "handler failed",
                    event_id=envelope.id,
                    error=repr(done.error),
                    attempt=envelope.attempt,
                )
        self._done.append(done)
        self._done_ready.set()

    # --- acknowledging ---

    async def _acker(self) -> None:
        backoff = Backoff()
        while True:
            await self._done_ready.wait()
            self._done_ready.clear()
            batch, self._done = self._done, []
            while True:
                try:
                    # Shielded: an ack that reached Redis must also be counted here.
                    await asyncio.shield(self._flush(batch))
                    backoff.reset()
                    break
                except UNAVAILABLE as exc:
                    self.metrics.redis_errors.labels("ack").inc()
                    self.log.warning("redis unavailable, retrying ack", error=str(exc))
                    await asyncio.sleep(backoff.next_delay())

    async def _flush(self, batch: list[Done]) -> None:
        """Write outputs, keep failures as dead letters, then acknowledge every entry at once."""
        emits = [(e.cls, e.encode()) for done in batch for e in done.outputs.emits]
        appends: list[tuple[str, Fields]] = [a for done in batch for a in done.outputs.appends]
        appends += [self._dead_letter_fields(done) for done in batch if done.error is not None]
        if emits or appends:
            await self.transport.publish(emits, appends)
        entry_ids = [entry_id for done in batch for entry_id in done.entry_ids]
        await self.transport.ack(self.cls, entry_ids)
        now = self.clock.wall()
        for done in batch:
            for envelope in done.events:
                self._latency.observe(max(0.0, now - envelope.ingest_ts))
            outcome = "ok" if done.error is None else "dead"
            self._processed[outcome].inc(len(done.events))
        for envelope in (e for done in batch for e in done.outputs.emits):
            self.metrics.ingested.labels(envelope.cls, "emit").inc()
        self.inflight -= len(entry_ids)
        self._inflight_gauge.set(self.inflight)
        self._slot_freed.set()

    def _dead_letter_fields(self, done: Done) -> tuple[str, Fields]:
        assert done.error is not None
        error = done.error
        summary = "".join(traceback.format_exception_only(type(error), error)).strip()
        return (
            keys.dead_letters(self.cls),
            {
                "ids": ",".join(e.id for e in done.events),
                "reason": "handler_error",
                "error_type": type(error).__name__,
                "error": summary[:2000],
                "attempts": max(e.attempt for e in done.events) + 1,
                "failed_ts": self.clock.wall(),
                "events": _pack_envelopes(done.events),
            },
        )

    async def _dead_letter_raw(self, entry_id: bytes, data: bytes | None, exc: DecodeError) -> None:
        """An entry no envelope can be read from: keep its bytes aside and ack it."""
        self.log.error("undecodable stream entry", entry_id=entry_id.decode(), error=exc.reason)
        fields: Fields = {"entry_id": entry_id, "reason": "decode_error", "error": exc.reason}
        if data is not None:
            fields = {**fields, "raw": data}
        await self.transport.append(keys.dead_letters(self.cls), fields)
        await self.transport.ack(self.cls, [entry_id])
        self.metrics.rejected.labels("decode_error").inc()

    def snapshot(self) -> dict[str, Any]:
        return {
            "lane": self.config.lane,
            "mode": self.config.mode,
            "concurrency": self.config.concurrency,
            "inflight": self.inflight,
            "running": self.running,
        }


def _pack_envelopes(events: Sequence[Envelope]) -> bytes:
    """Dead-letter payload: the failed envelopes, msgpack-encoded, so they can be replayed."""
    return bytes(msgpack.packb([e.encode() for e in events], use_bin_type=True))
