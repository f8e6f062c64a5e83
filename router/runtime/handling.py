"""Running the actor: one event (stream and queue modes) or a batch, within `timeout_ms`.

Every outcome goes to the settler as a `Done`: success with its outputs, a failure without
them, and, in a batch, each member a handler failed (`ctx.fail`) on its own. Any exception a
handler raises is the event's, never the pool's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from router.runtime.context import EventContext
from router.runtime.done import Done

if TYPE_CHECKING:
    from collections.abc import Awaitable

    import structlog

    from router.clock import Clock
    from router.config import ClassConfig
    from router.notify.notifier import Notifier
    from router.routing.addressing import Addresser
    from router.runtime.actor import Actor
    from router.runtime.context import Outputs
    from router.runtime.done import Entry
    from router.runtime.policies import Expiry
    from router.runtime.settle import Settler
    from router.runtime.slots import Slots
    from router.streams.envelope import Envelope
    from router.streams.records import Records


class Handling:
    """Calls one class's actor and hands every outcome to its settler."""

    def __init__(
        self,
        cls: str,
        config: ClassConfig,
        actor: Actor,
        addresser: Addresser,
        settler: Settler,
        *,
        slots: Slots,
        notifier: Notifier | None = None,
        records: Records | None = None,
        expiry: Expiry | None,
        clock: Clock,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.cls = cls
        self.actor = actor
        self.addresser = addresser
        self.settler = settler
        self.slots = slots
        self.notifier = notifier
        self.records = records
        self.expiry = expiry
        self.clock = clock
        self.log = log
        self.timeout_ms = config.timeout_ms
        self.timeout_s = config.timeout_ms / 1000 if config.timeout_ms else None
        # The actor's entry point, called without a coroutine of the pool's own around it.
        self._invoke = self._handle_many if config.mode == "batch" else self._handle_one
        self._batches = actor.handles_batches()

    def reconfigure(self, config: ClassConfig, expiry: Expiry | None) -> None:
        """A reloaded class's timeout and shedding (its mode never changes live)."""
        self.timeout_ms = config.timeout_ms
        self.timeout_s = config.timeout_ms / 1000 if config.timeout_ms else None
        self.expiry = expiry

    async def handle(self, batch: list[Entry]) -> None:
        """Run the actor on one entry or a batch; settle every entry, whatever happens."""
        if self.expiry is not None:
            batch, expired = self.expiry.split(batch)
            if expired is not None:
                self.settler.later(expired)
            if not batch:
                return
        if len(batch) == 1:  # stream and queue mode: no comprehensions (each a call on 3.11)
            entry_ids, events = [batch[0][0]], [batch[0][1]]
        else:
            entry_ids, events = [i for i, _ in batch], [e for _, e in batch]
        first = events[0]
        ctx = EventContext(
            self.cls, first, self.addresser, self.log,
            batch=len(events) > 1, redelivered=self._redelivered(batch), notifier=self.notifier,
            records=self.records,
        )  # fmt: skip
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
            error = TimeoutError(f"handler took longer than timeout_ms={self.timeout_ms}")
            error.__cause__ = exc
        except Exception as exc:  # any handler failure is the event's, not the pool's
            error = exc
        timing = (started_wall, clock.monotonic() - started)
        if error is not None:  # a failed handler's outputs are not written
            ctx.log.warning(
                "handler failed", error=repr(error), attempt=first.attempt, events=len(events)
            )
            self.settler.later(Done.failed(entry_ids, events, error, *timing))
            return
        outputs = ctx.outputs
        if not outputs.failures:
            self.settler.later(Done(entry_ids, events, outputs, None, "", False, *timing))
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
                self.settler.later(Done.failed([entry_id], [event], error, *timing))
        if kept:
            rest = outputs.without(set(failed))
            ids, members = [i for i, _ in kept], [e for _, e in kept]
            self.settler.later(Done(ids, members, rest, None, "", False, *timing))

    def _redelivered(self, batch: list[Entry]) -> frozenset[str]:
        """The events of `batch` another consumer held before (empty, nearly always)."""
        held_before = self.slots.redelivered
        if not held_before:
            return frozenset()
        return frozenset(event.id for entry_id, event in batch if entry_id in held_before)

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
