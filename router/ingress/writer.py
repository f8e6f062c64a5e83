"""The ingest writer: concurrent ingest calls share Redis round trips.

Under load, many HTTP requests and MQTT batches each wait on a round trip of their own for a
few events, and each such write costs a redis-py pipeline: most of the CPU of a small request.
When nothing is being written, a call writes at once from its own task (no extra hop on an
idle service). While a write is in flight, calls queue, and the writer task sends everything
queued as its next write: under heavy load one round trip carries many calls. A caller still
hears back only once its own events are in Redis.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from router.streams.transport import Written

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    from router.streams.transport import Fields, Outgoing, Transport

T = TypeVar("T")
LINE = "ingest"  # the writer's own connection for a call written at once
QUEUED_LINE = "ingest:queued"  # and for what queued meanwhile: the two may overlap


@dataclass(slots=True)
class _Call:
    items: Sequence[Outgoing]
    extra: Sequence[tuple[str, Fields]]
    done: asyncio.Future[Written]


class Writer:
    """Queues `write` calls while a write is in flight; `run()` writes what queued.

    Without `run()` (not started, or stopped) each call writes on its own, and so does a call
    of `own_write_items` events or more, which gains nothing from company.
    """

    def __init__(
        self, transport: Transport, *, max_items: int = 2_000, own_write_items: int = 100
    ) -> None:
        self.transport = transport
        self.max_items = max_items  # events per write: one script call must not hold Redis long
        self.own_write_items = own_write_items  # a call this big fills a round trip by itself
        self._queue: deque[_Call] = deque()
        self._wake = asyncio.Event()
        self._running = False
        self._in_flight = 0  # writes sent and not yet answered

    @property
    def running(self) -> bool:
        return self._running

    @property
    def queued(self) -> int:
        """Calls waiting for the next write."""
        return len(self._queue)

    async def write(
        self, items: Sequence[Outgoing], extra: Sequence[tuple[str, Fields]] = ()
    ) -> Written:
        """What `Transport.write` returns for these items, once they are written."""
        if not self._running or len(items) >= self.own_write_items:
            return await self.transport.write(items, extra)
        if not self._in_flight:  # an idle line: write now, from the caller's own task
            return await self._counted(self.transport.write(items, extra, line=LINE))
        call = _Call(items, extra, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        self._wake.set()
        return await call.done

    async def run(self) -> None:
        self._running = True
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while calls := self._take():
                    await self._counted(self._write(calls))
        finally:
            self._running = False
            _fail(list(self._queue), ConnectionError("the service is stopping"))
            self._queue.clear()

    async def _counted(self, write: Awaitable[T]) -> T:
        self._in_flight += 1
        try:
            return await write
        finally:
            self._in_flight -= 1

    def _take(self) -> list[_Call]:
        """Queued calls, oldest first, up to `max_items` events (one call at least)."""
        calls: list[_Call] = []
        count = 0
        while self._queue and (not calls or count + len(self._queue[0].items) <= self.max_items):
            call = self._queue.popleft()
            if not call.done.done():  # else its caller gave up waiting
                calls.append(call)
                count += len(call.items)
        return calls

    async def _write(self, calls: list[_Call]) -> None:
        items = [item for call in calls for item in call.items]
        extra = [fields for call in calls for fields in call.extra]
        try:
            written = await self.transport.write(items, extra, line=QUEUED_LINE)
        except Exception as exc:
            _fail(calls, exc)
            return
        except BaseException:
            _fail(calls, ConnectionError("the write was interrupted"))
            raise
        start, extra_start = 0, 0
        for call in calls:
            end, extra_end = start + len(call.items), extra_start + len(call.extra)
            if not call.done.done():
                mine = Written(written.ids[start:end], written.extras[extra_start:extra_end])
                call.done.set_result(mine)
            start, extra_start = end, extra_end


def _fail(calls: list[_Call], exc: Exception) -> None:
    for call in calls:
        if not call.done.done():
            call.done.set_exception(exc)
