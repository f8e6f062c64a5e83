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
        gauge = metrics.inflight.labels(cls)
        self.slots = Slots(config.capacity, config.batch_size, config.lane, scheduler, gauge)
        self.promoter = Promoter(tag, transport, clock, keeper)
        failures = Failures(config.retry)
        self.accounting = Accounting(
            cls, config, metrics, clock=clock, failures=failures, log=log, sla_window=sla_window
        )
        self.settler = Settler(
            tag, transport, self.slots, failures, self.accounting,
            metrics=metrics, clock=clock, log=log, retried=self.promoter.wake,
        )  # fmt: skip
        handling = Handling(
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
                helpers = [
                    group.create_task(self.dispatcher.run_handler(), name=f"{name}:handler:{n}")
                    for n in range(self.config.concurrency)
                ]
                helpers.append(group.create_task(self.settler.run(), name=f"{name}:settler"))
                helpers.append(group.create_task(self.leases.run(), name=f"{name}:leases"))
                helpers.append(group.create_task(self.promoter.run(), name=f"{name}:delay"))
                await self.reader.run()
                await self.slots.wait_empty()
                await cancel_and_wait(*helpers)
        finally:
            self.running = False
            await self.actor.stop()

    def _reset(self) -> None:
        """Forget a failed run's in-process state; its fetched entries stay pending in Redis."""
        self.slots.reset()
        self.dispatcher.reset()
        self.settler.reset()

    def stop(self) -> None:
        """Stop fetching; `run()` returns once what was fetched is handled and settled."""
        self._stopping.set()

    def snapshot(self) -> dict[str, Any]:
        return {
            "lane": self.config.lane,
            "mode": self.config.mode,
            "concurrency": self.config.concurrency,
            "inflight": self.inflight,
            "running": self.running,
        }
