"""The ingest writer: concurrent ingest calls share round trips, and each caller hears back
about its own events only."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import pytest
from servers import wait_for

from router.ingress.writer import LINE, QUEUED_LINE, Writer
from router.streams.transport import Fields, Outgoing, Transport, Written

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence


class GatedTransport:
    """Records every write; a write waits until the test opens the gate, or fails on demand."""

    def __init__(self) -> None:
        self.writes: list[list[Outgoing]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: Exception | None = None
        self.lines: list[str | None] = []  # the line each write named

    async def write(
        self,
        items: Sequence[Outgoing],
        extra: Sequence[tuple[str, Fields]] = (),
        *,
        line: str | None = None,
    ) -> Written:
        self.writes.append(list(items))
        self.lines.append(line)
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        # the "stream id" of each item is its data
        return Written([item.data for item in items], [None] * len(extra))


async def ids_of(writer: Writer, batch: list[Outgoing]) -> list[bytes | None]:
    """What the writer answered for `batch`: each item's stream id."""
    return (await writer.write(batch)).checked()


def items(*names: str) -> list[Outgoing]:
    return [Outgoing("c", name.encode()) for name in names]


@contextlib.asynccontextmanager
async def running(writer: Writer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(writer.run())
    await wait_for(lambda: writer.running)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def writer_on(transport: GatedTransport, max_items: int = 2_000) -> Writer:
    return Writer(cast("Transport", transport), max_items=max_items, own_write_items=10)


@dataclass
class Busy:
    """A running writer whose line is busy: one call ("first") written and not yet answered."""

    transport: GatedTransport
    writer: Writer
    task: asyncio.Task[None]  # the writer's run()
    first: asyncio.Task[list[bytes | None]]

    def call(self, *names: str) -> asyncio.Task[list[bytes | None]]:
        return asyncio.create_task(ids_of(self.writer, items(*names)))


@contextlib.asynccontextmanager
async def busy_line(max_items: int = 2_000) -> AsyncIterator[Busy]:
    transport = GatedTransport()
    writer = writer_on(transport, max_items)
    async with running(writer) as task:
        transport.gate.clear()
        first = asyncio.create_task(ids_of(writer, items("first")))
        await wait_for(lambda: len(transport.writes) == 1)
        yield Busy(transport, writer, task, first)


async def test_a_call_on_an_idle_line_is_written_at_once_by_itself() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    async with running(writer):
        assert await ids_of(writer, items("a", "b")) == [b"a", b"b"]
        assert await ids_of(writer, items("c")) == [b"c"]
    assert transport.writes == [items("a", "b"), items("c")]
    assert transport.lines == [LINE, LINE]  # the writer's own connection


async def test_calls_made_while_a_write_is_in_flight_share_the_next_write() -> None:
    async with busy_line() as line:
        later = [line.call(f"b{n}", f"c{n}") for n in range(3)]
        await wait_for(lambda: len(line.transport.writes) == 2)
        line.transport.gate.set()
        assert await line.first == [b"first"]
        assert [await call for call in later] == [[b"b0", b"c0"], [b"b1", b"c1"], [b"b2", b"c2"]]
        assert line.transport.lines == [LINE, QUEUED_LINE]  # two connections: they overlap
    assert [len(write) for write in line.transport.writes] == [1, 6]


async def test_a_write_carries_at_most_max_items_events() -> None:
    async with busy_line(max_items=4) as line:
        calls = [line.call("x", "y", "z") for _ in range(3)]
        await wait_for(lambda: len(line.transport.writes) == 2)
        line.transport.gate.set()
        await asyncio.gather(line.first, *calls)
    assert [len(write) for write in line.transport.writes] == [1, 3, 3, 3]


async def test_a_failed_write_fails_every_call_in_it_and_the_writer_goes_on() -> None:
    async with busy_line() as line:
        line.transport.failure = ConnectionError("redis went away")
        calls = [line.call(str(n)) for n in range(3)]
        await wait_for(lambda: len(line.transport.writes) == 2)
        line.transport.gate.set()
        outcomes = await asyncio.gather(line.first, *calls, return_exceptions=True)
        assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
        line.transport.failure = None
        assert await ids_of(line.writer, items("after")) == [b"after"]


async def test_a_caller_that_gave_up_while_queued_is_not_written() -> None:
    async with busy_line() as line:
        second = line.call("second")
        await wait_for(lambda: len(line.transport.writes) == 2)  # the writer's own, in flight
        abandoned, kept = line.call("abandoned"), line.call("kept")
        await wait_for(lambda: line.writer.queued == 2)
        abandoned.cancel()
        line.transport.gate.set()
        await asyncio.gather(line.first, second)
        assert await kept == [b"kept"]
    assert line.transport.writes == [items("first"), items("second"), items("kept")]


async def test_calls_still_queued_at_stop_fail_instead_of_hanging() -> None:
    async with busy_line() as line:
        second = line.call("second")
        await wait_for(lambda: len(line.transport.writes) == 2)
        queued = line.call("queued")
        await wait_for(lambda: line.writer.queued == 1)
        line.task.cancel()
        with pytest.raises(ConnectionError, match="interrupted"):
            await second
        with pytest.raises(ConnectionError, match="stopping"):
            await queued
        line.transport.gate.set()
        assert await line.first == [b"first"]  # written from its caller's task: not the writer's


async def test_a_big_call_writes_on_its_own_beside_the_queue() -> None:
    big = items(*(str(n) for n in range(10)))
    async with busy_line() as line:
        alone = asyncio.create_task(ids_of(line.writer, big))
        await wait_for(lambda: len(line.transport.writes) == 2)  # not queued behind the first
        line.transport.gate.set()
        assert await line.first == [b"first"]
        assert await alone == [item.data for item in big]
    assert line.transport.lines == [LINE, None]  # beside the line: the client's connections


async def test_without_a_running_writer_each_call_writes_on_its_own() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    results = await asyncio.gather(ids_of(writer, items("a")), ids_of(writer, items("b")))
    assert list(results) == [[b"a"], [b"b"]]
    assert transport.writes == [items("a"), items("b")]
