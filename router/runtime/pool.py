"""The actor pool: one class's actor run over its stream in stream, queue or batch mode.

Flow inside a pool, one piece per module: the `Reader` fetches at most as many entries as
the pool has free `Slots` and now and then reclaims a dead consumer's; the `Dispatcher`
hands them to `concurrency` handler tasks in the class's mode; `Handling` runs the actor and
hands each outcome to the `Settler`, which writes outputs and acks, retries (`Failures`) or
dead-letters in one transaction, and `Accounting` counts it. Beside them, `Leases` keeps slow
handlers' entries their own and the `Promoter` moves due delayed events back into the stream.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

import structlog

from router.runtime.accounting import Accounting
from router.runtime.delay import Promoter
from router.runtime.dispatch import Dispatcher
from router.runtime.handling import Handling
from router.runtime.leases import Leases
from router.runtime.policies import Expiry, Failures
from router.runtime.reader import Reader
from router.runtime.settle import Settler
from router.runtime.slots import Slots
from router.tasks import cancel_and_wait

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from router.clock import Clock
    from router.config import ClassConfig
    from router.metrics import Metrics, SlaWindow
    from router.notify.notifier import Notifier
    from router.routing.addressing import Addresser
    from router.runtime.actor import Actor
    from router.runtime.scheduler import LaneScheduler
    from router.streams.records import Records
    from router.streams.transport import Transport


class Pool:
    """One class's actor pool inside this process."""

    def __init__(
        self,
        *,
        cls: str,
        tag: str | None = None,
        config: ClassConfig,
        actor: Actor,
        transport: Transport,
        addresser: Addresser,
        metrics: Metrics,
        clock: Clock,
        scheduler: LaneScheduler,
        block_ms: int = 500,
        sla_window: SlaWindow | None = None,
        keeper: Callable[[], bool] = lambda: True,
        leased: Callable[[], bool] | None = None,
        notifier: Notifier | None = None,
        records: Records | None = None,
    ) -> None:
        """`keeper`: whether this process polls the partition's delay queue (one per shared
        partition does). `leased`: for an ordered partition, whether this process still surely
        holds its lease; the pool reads only while it does."""
        self.cls = cls
        self.tag = tag = tag or cls  # the partition this pool consumes: by default the only one
        self.config = config
        self.actor = actor
        self.transport = transport
        self.running = False
        self._stopping = asyncio.Event()
        log = structlog.get_logger("switchyard.pool").bind(**{"class": cls})
        if tag != cls:
            log = log.bind(partition=tag)
        self.slots = Slots(config.capacity, config.batch_size, config.lane, scheduler)
        self.promoter = Promoter(tag, transport, clock, keeper)
        failures = Failures(config.retry)
        self.accounting = Accounting(
            cls, config, metrics, clock=clock, failures=failures, log=log, sla_window=sla_window
        )
        self.settler = Settler(
            tag, transport, self.slots, failures, self.accounting,
            metrics=metrics, clock=clock, log=log, retried=self.promoter.wake,
        )  # fmt: skip
        self._expiry: Callable[[ClassConfig], Expiry | None] = functools.partial(
            Expiry.of, cls, clock=clock, shed=metrics.shed
        )
        self.handling = handling = Handling(
            cls, config, actor, addresser, self.settler, slots=self.slots, notifier=notifier,
            records=records, expiry=Expiry.of(cls, config, clock, metrics.shed), clock=clock,
            log=log,
        )  # fmt: skip
        self.dispatcher = Dispatcher(config.mode, handling.handle)
        self.reader = Reader(
            tag, config, transport, self.slots, scheduler,
            dispatcher=self.dispatcher, settler=self.settler, clock=clock, metrics=metrics,
            log=log, stopping=self._stopping, block_ms=block_ms, leased=leased,
        )  # fmt: skip
        self.leases = Leases(tag, transport, self.slots, config.claim_idle_ms)
        self._handlers: asyncio.TaskGroup | None = None  # while running: where handlers start
        self._handler_tasks: list[asyncio.Task[None]] = []

    def reconfigure(self, config: ClassConfig) -> None:
        """Take a reloaded class's settings live: concurrency and batch (the room it fetches
        into, and handler tasks to fill it), retry, SLA, shedding, timeout and deliveries.
        Mode, lane and partitions never change here (a reload refuses that)."""
        self.config = self.reader.config = config
        self.slots.capacity, self.slots.unit = config.capacity, config.batch_size
        self.slots.freed.set()  # room may have grown: the reader looks again
        self.settler.failures.retry = config.retry
        self.accounting.target_s = config.sla.target_ms / 1000 if config.sla else None
        self.handling.reconfigure(config, self._expiry(config))
        self.leases.claim_idle_ms = config.claim_idle_ms
        self._add_handlers()

    def _add_handlers(self) -> None:
        """Handler tasks up to the concurrency (a lower one leaves some idle: the slots bound
        the work)."""
        group = self._handlers
        while group is not None and len(self._handler_tasks) < self.config.concurrency:
            name = f"pool:{self.tag}:handler:{len(self._handler_tasks)}"
            self._handler_tasks.append(group.create_task(self.dispatcher.run_handler(), name=name))

    @property
    def inflight(self) -> int:
        """Entries fetched and not yet settled."""
        return self.slots.inflight

    @property
    def sla_window(self) -> SlaWindow:
        return self.accounting.sla_window

    def take_over(self, alive: Collection[str], min_idle_ms: int = 0) -> None:
        """Take the pending entries of the consumers not `alive` (see `Reader.take_over`)."""
        self.reader.take_over(alive, min_idle_ms)

    async def run(self) -> None:
        """Run until `stop()` and then drain: finish what was fetched, settle it, return.

        An ordered (stream-mode) pool runs only while this process holds its partition's
        lease, so before it reads anything new it takes every other consumer's pending
        entries: the previous owner's, oldest first.
        """
        self._reset()
        await self.transport.ensure_group(self.tag)
        if self.config.ordered:
            self.take_over(())
        await self.actor.start()
        self.running = True
        try:
            async with asyncio.TaskGroup() as group:
                name = f"pool:{self.tag}"
                self._handlers, self._handler_tasks = group, []
                self._add_handlers()
                helpers = [group.create_task(self.leases.run(), name=f"{name}:leases")]
                helpers.append(group.create_task(self.promoter.run(), name=f"{name}:delay"))
                self.settler.start(f"{name}:settler")
                try:
                    await self.reader.run()
                    await self.slots.wait_empty()
                finally:
                    self._handlers = None
                    await asyncio.shield(self._end(helpers))
        finally:
            self.running = False
            await self.actor.stop()

    async def _end(self, helpers: list[asyncio.Task[None]]) -> None:
        """Handlers and helpers cancelled again until each is done (not the group's own
        cancel, which it sends once: a helper that lost it, as redis-py can, would hold the
        group, and so the pool's restart, for ever), then the settler, between flushes."""
        await cancel_and_wait(*helpers, *self._handler_tasks)
        await self.settler.stop()

    def _reset(self) -> None:
        """Forget a failed run's in-process state; its fetched entries stay pending in Redis."""
        self.slots.reset()
        self.dispatcher.reset()
        self.settler.reset()

    def stop(self) -> None:
        """Stop fetching; `run()` returns once what was fetched is handled and settled."""
        self._stopping.set()
        self.slots.stop()

    def snapshot(self) -> dict[str, Any]:
        return {
            "lane": self.config.lane,
            "mode": self.config.mode,
            "concurrency": self.config.concurrency,
            "inflight": self.inflight,
            "running": self.running,
        }
