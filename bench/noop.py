"""Bench actors: a no-op (a benchmark measures Switchyard's own cost, not a handler's), two
no-ops that record queue waits, and a slow one."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from actors.api import Actor, Context

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.streams.envelope import Envelope


class NoOp(Actor):
    """Does nothing with each event (or batch); the event is then acknowledged as usual."""

    async def handle(self, event: Envelope, ctx: Context) -> None:
        return None

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        return None


class Recorder(Actor):
    """A no-op that notes each event's queue wait: ingest (`ingest_ts`) to handler start, and
    source (`source_ts`, when the sender stamped the event) to handler start.

    Wall-clock seconds, since both stamps are wall time (the sender is another process on the
    same machine, so it reads the same clock).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.waits: list[float] = []
        self.source_waits: list[float] = []

    async def handle(self, event: Envelope, ctx: Context) -> None:
        now = time.time()
        self.waits.append(now - event.ingest_ts)
        if event.source_ts is not None:
            self.source_waits.append(now - event.source_ts)


class Stamps(Actor):
    """A no-op that keeps each event's ingest time and handler start, wall seconds, for
    bench.tail to see which events were late and when."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.times: list[tuple[float, float]] = []
        self.started = asyncio.Event()  # set at every event, for a bench waiting on a count

    async def handle(self, event: Envelope, ctx: Context) -> None:
        self.times.append((event.ingest_ts, time.time()))
        self.started.set()


class Slow(Actor):
    """Takes `delay_ms` per event (an await, not CPU): a consumer much slower than its backlog."""

    def __init__(self, delay_ms: float = 50.0, **options: Any) -> None:
        super().__init__(delay_ms=delay_ms, **options)
        self.delay_s = delay_ms / 1000

    async def handle(self, event: Envelope, ctx: Context) -> None:
        await asyncio.sleep(self.delay_s)
