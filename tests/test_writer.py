"""The ingest writer: concurrent ingest calls share round trips, and each caller hears back
about its own events only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import cast

import pytest
from servers import wait_for

from router.transport import Fields, Outgoing, Transport
from router.writer import Writer


class GatedTransport:
    """Records every write; a write waits until the test opens the gate, or fails on demand."""

    def __init__(self) -> None:
        self.writes: list[list[Outgoing]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: Exception | None = None

    async def publish(
        self, items: Sequence[Outgoing], extra: Sequence[tuple[str, Fields]] = ()
    ) -> list[bytes | None]:
        self.writes.append(list(items))
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return [item.data for item in items]  # the "stream id" of each item is its data


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
    return Writer(cast(Transport, transport), max_items=max_items, own_write_items=10)


async def test_a_call_on_an_idle_line_is_written_at_once_by_itself() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    async with running(writer):
        assert await writer.publish(items("a", "b")) == [b"a", b"b"]
        assert await writer.publish(items("c")) == [b"c"]
    assert transport.writes == [items("a", "b"), items("c")]


async def test_calls_made_while_a_write_is_in_flight_share_the_next_write() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    async with running(writer):
        transport.gate.clear()
        first = asyncio.create_task(writer.publish(items("a")))
        await wait_for(lambda: len(transport.writes) == 1)
        later = [asyncio.create_task(writer.publish(items(f"b{n}", f"c{n}"))) for n in range(3)]
        await wait_for(lambda: len(transport.writes) == 2)
        transport.gate.set()
        assert await first == [b"a"]
        assert [await call for call in later] == [[b"b0", b"c0"], [b"b1", b"c1"], [b"b2", b"c2"]]
    assert [len(write) for write in transport.writes] == [1, 6]


async def test_a_write_carries_at_most_max_items_events() -> None:
    transport = GatedTransport()
    writer = writer_on(transport, max_items=4)
    async with running(writer):
        transport.gate.clear()
        calls = [asyncio.create_task(writer.publish(items("x", "y", "z"))) for _ in range(3)]
        await wait_for(lambda: len(transport.writes) == 2)
        transport.gate.set()
        await asyncio.gather(*calls)
    assert [len(write) for write in transport.writes] == [3, 3, 3]


async def test_a_failed_write_fails_every_call_in_it_and_the_writer_goes_on() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    async with running(writer):
        transport.gate.clear()
        transport.failure = ConnectionError("redis went away")
        calls = [asyncio.create_task(writer.publish(items(str(n)))) for n in range(4)]
        await wait_for(lambda: len(transport.writes) == 2)  # the first alone, then the rest
        transport.gate.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
        transport.failure = None
        assert await writer.publish(items("after")) == [b"after"]


async def test_a_caller_that_gave_up_while_queued_is_not_written() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    async with running(writer):
        transport.gate.clear()
        first = asyncio.create_task(writer.publish(items("first")))
        await wait_for(lambda: len(transport.writes) == 1)
        second = asyncio.create_task(writer.publish(items("second")))
        await wait_for(lambda: len(transport.writes) == 2)  # the writer's own write, in flight
        abandoned = asyncio.create_task(writer.publish(items("abandoned")))
        kept = asyncio.create_task(writer.publish(items("kept")))
        await wait_for(lambda: writer.queued == 2)
        abandoned.cancel()
        transport.gate.set()
        await asyncio.gather(first, second)
        assert await kept == [b"kept"]
    assert transport.writes == [items("first"), items("second"), items("kept")]


async def test_calls_still_queued_at_stop_fail_instead_of_hanging() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    transport.gate.clear()
    async with running(writer) as task:
        first = asyncio.create_task(writer.publish(items("first")))
        await wait_for(lambda: len(transport.writes) == 1)
        second = asyncio.create_task(writer.publish(items("second")))
        await wait_for(lambda: len(transport.writes) == 2)
        queued = asyncio.create_task(writer.publish(items("queued")))
        await wait_for(lambda: writer.queued == 1)
        task.cancel()
        with pytest.raises(ConnectionError, match="interrupted"):
            await second
        with pytest.raises(ConnectionError, match="stopping"):
            await queued
        transport.gate.set()
        assert await first == [b"first"]  # written from its caller's task: not the writer's


async def test_a_big_call_writes_on_its_own_beside_the_queue() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    big = items(*(str(n) for n in range(10)))
    async with running(writer):
        transport.gate.clear()
        small = asyncio.create_task(writer.publish(items("small")))
        await wait_for(lambda: len(transport.writes) == 1)
        alone = asyncio.create_task(writer.publish(big))
        await wait_for(lambda: len(transport.writes) == 2)  # not queued behind the first
        transport.gate.set()
        assert await small == [b"small"]
        assert await alone == [item.data for item in big]


async def test_without_a_running_writer_each_call_writes_on_its_own() -> None:
    transport = GatedTransport()
    writer = writer_on(transport)
    results = await asyncio.gather(writer.publish(items("a")), writer.publish(items("b")))
    assert list(results) == [[b"a"], [b"b"]]
    assert transport.writes == [items("a"), items("b")]
