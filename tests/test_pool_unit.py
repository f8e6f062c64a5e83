"""The pool's engine on `router.testing.fake_transport()`: handling, ordering, retries, dead
letters, batch members and refused outputs, with the real transport code on fakeredis.

The real-Redis pool, delivery and fault tests stay (`test_pool_modes.py`, `test_delivery.py`,
`test_faults.py`): they prove the real thing. These need no server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry
from servers import wait_for

from actors.api import Actor, Context, Envelope, PermanentFailure
from router.clock import SystemClock
from router.config import parse_config
from router.metrics import Metrics
from router.routing.addressing import Addresser
from router.routing.rules import Router
from router.runtime.pool import Pool
from router.runtime.scheduler import LaneScheduler
from router.streams import keys
from router.streams.records import Records
from router.streams.transport import Outgoing
from router.testing import fake_transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from router.streams.redis import RedisTransport

GROUP = "switchyard"


class Recording(Actor):
    """Records what it handles; a payload's `fail` raises, `permanent` raises permanently,
    `append_to` appends to that stream, `record` reads that record and `set` updates it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.handled: list[Envelope] = []
        self.active: dict[str | None, int] = defaultdict(int)
        self.overlap = False
        self.seen_records: list[dict[str, str]] = []

    async def handle(self, event: Envelope, ctx: Context) -> None:
        self.active[event.key] += 1
        self.overlap |= self.active[event.key] > 1
        await asyncio.sleep(0)  # let other handlers run meanwhile
        self.active[event.key] -= 1
        if "permanent" in event.payload:
            raise PermanentFailure(event.payload["permanent"])
        if "fail" in event.payload:
            raise RuntimeError(event.payload["fail"])
        if "append_to" in event.payload:
            ctx.append(event.payload["append_to"], {"id": event.id})
        if "record" in event.payload:  # the record as this event found it
            self.seen_records.append(await ctx.record(event.payload["record"]))
        if "set" in event.payload:  # this event's id set on that record
            ctx.update(event.payload["set"], {event.id: event.attempt}, keep_s=60)
        self.handled.append(event)


class MemberFailing(Recording):
    """A batch handler that fails each member whose payload says `bad`, alone."""

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        for event in events:
            if event.payload.get("bad"):
                ctx.fail(event, PermanentFailure("bad member"))
            else:
                ctx.append("test:done", {"id": event.id}, parent=event)
                self.handled.append(event)


def class_yaml(mode: str, extra: str = "") -> str:
    return f"""
lanes: [{{name: high}}]
classes:
  work:
    lane: high
    actor: "actors.builtin:Log"
    mode: {mode}
    concurrency: 4
    retry: {{max_attempts: 2, backoff_ms: 10, jitter: 0}}
    {extra}
"""


def make_pool(
    actor: Actor, mode: str = "queue", extra: str = ""
) -> tuple[Pool, RedisTransport, Metrics]:
    """A pool of class `work` for `actor` on a fresh fake transport, not yet running."""
    config = parse_config(class_yaml(mode, extra))
    clock = SystemClock()
    transport = fake_transport(GROUP)
    metrics = Metrics(CollectorRegistry())
    pool = Pool(
        cls="work",
        config=config.classes["work"],
        actor=actor,
        transport=transport,
        addresser=Addresser(config, Router.from_config(config), clock),
        metrics=metrics,
        clock=clock,
        scheduler=LaneScheduler(64, config.lanes, clock),
        block_ms=10,
        records=Records(transport.redis, "work"),
    )
    return pool, transport, metrics


@contextlib.asynccontextmanager
async def running(
    actor: Actor, mode: str = "queue", extra: str = ""
) -> AsyncIterator[tuple[Pool, RedisTransport, Metrics]]:
    """A pool of class `work` running `actor` on a fresh fake transport."""
    pool, transport, metrics = make_pool(actor, mode, extra)
    task = asyncio.create_task(pool.run())
    try:
        await wait_for(lambda: pool.running)
        yield pool, transport, metrics
    finally:
        pool.stop()
        async with asyncio.timeout(10):
            await task


async def send(transport: RedisTransport, *payloads: dict[str, Any], key: str = "k") -> list[str]:
    events = [Envelope(f"e{n}-{id(p)}", "work", "high", p, key=key) for n, p in enumerate(payloads)]
    await transport.publish([Outgoing("work", e.encode()) for e in events])
    return [e.id for e in events]


def processed(metrics: Metrics, outcome: str) -> float:
    labels = {"class": "work", "outcome": outcome}
    value = metrics.registry.get_sample_value("switchyard_events_processed_total", labels)
    return value or 0.0


async def dead_letters(transport: RedisTransport) -> list[dict[bytes, bytes]]:
    entries: Any = await transport.redis.xrange(keys.dead_letters("work"))
    return [fields for _, fields in entries]


async def pending(transport: RedisTransport) -> int:
    summary: Any = await transport.redis.xpending(keys.stream("work"), GROUP)
    return int(summary["pending"])


async def test_handled_events_are_acknowledged_and_nothing_stays_pending() -> None:
    actor = Recording()
    async with running(actor) as (_, transport, metrics):
        ids = await send(transport, {"n": 1}, {"n": 2}, {"n": 3})
        await wait_for(lambda: processed(metrics, "ok") == 3)
        assert sorted(e.id for e in actor.handled) == sorted(ids)
        assert await pending(transport) == 0


class Holding(Actor):
    """Holds every event it is given until `release` is set."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.release = asyncio.Event()
        self.active = 0

    async def handle(self, event: Envelope, ctx: Context) -> None:
        self.active += 1
        await self.release.wait()


async def test_a_pool_reads_half_its_capacity_at_a_time_and_still_fills_it() -> None:
    """Concurrency 4: fetches of 2, so one half is read or acknowledged while the other is
    handled, and the 4 slots are all used while the rest of the backlog stays in Redis."""
    actor = Holding()
    pool, transport, metrics = make_pool(actor)
    asked: list[int] = []
    read = transport.read

    async def counted_read(tag: str, count: int, block_ms: int) -> list[Any]:
        asked.append(count)
        return await read(tag, count, block_ms)

    transport.read = counted_read  # type: ignore[method-assign]
    await send(transport, *({"n": n} for n in range(7)))
    task = asyncio.create_task(pool.run())
    try:
        await wait_for(lambda: actor.active == 4)
        assert pool.inflight == 4
        assert max(asked) == 2
        actor.release.set()
        await wait_for(lambda: processed(metrics, "ok") == 7)
    finally:
        pool.stop()
        async with asyncio.timeout(10):
            await task
    assert max(asked) == 2


async def test_stream_mode_runs_one_key_at_a_time_in_order() -> None:
    actor = Recording()
    async with running(actor, "stream") as (_, transport, metrics):
        for n in range(20):
            await send(transport, {"n": n}, key=f"k{n % 3}")
        await wait_for(lambda: processed(metrics, "ok") == 20)
    assert not actor.overlap
    for key in ("k0", "k1", "k2"):
        numbers = [e.payload["n"] for e in actor.handled if e.key == key]
        assert numbers == sorted(numbers)


async def test_a_failing_event_is_retried_through_the_delay_queue_then_dead_lettered() -> None:
    async with running(Recording()) as (_, transport, metrics):
        [failing] = await send(transport, {"fail": "boom"})
        await wait_for(lambda: processed(metrics, "dead") == 1, timeout=10)
        assert processed(metrics, "retried") == 1
        [letter] = await dead_letters(transport)
        assert (letter[b"id"].decode(), letter[b"reason"], letter[b"attempts"]) == (
            failing, b"handler_error", b"2",
        )  # fmt: skip
        assert await pending(transport) == 0


async def test_a_permanent_failure_is_dead_lettered_at_once_with_its_reason() -> None:
    async with running(Recording()) as (_, transport, metrics):
        await send(transport, {"permanent": "no such patient"})
        await wait_for(lambda: processed(metrics, "dead") == 1)
        assert processed(metrics, "retried") == 0
        [letter] = await dead_letters(transport)
        assert letter[b"reason"] == b"permanent"
        assert (letter[b"error_type"], b"no such patient" in letter[b"error"]) == (
            b"PermanentFailure", True,
        )  # fmt: skip


async def test_a_batch_member_failed_by_its_handler_is_dead_lettered_alone() -> None:
    actor = MemberFailing()
    batch = "batch: {max_size: 5, max_wait_ms: 50}"
    async with running(actor, "batch", batch) as (_, transport, metrics):
        ids = await send(transport, {"n": 1}, {"n": 2, "bad": True}, {"n": 3})
        await wait_for(lambda: processed(metrics, "ok") == 2 and processed(metrics, "dead") == 1)
        [letter] = await dead_letters(transport)
        assert letter[b"id"].decode() == ids[1]
        done: Any = await transport.redis.xrange("test:done")
        assert sorted(f[b"id"].decode() for _, f in done) == sorted([ids[0], ids[2]])
        assert await pending(transport) == 0


async def test_batch_mode_without_handle_batch_fails_members_alone() -> None:
    actor = Recording()
    batch = "batch: {max_size: 5, max_wait_ms: 50}"
    async with running(actor, "batch", batch) as (_, transport, metrics):
        ids = await send(transport, {"n": 1}, {"permanent": "bad"}, {"n": 3})
        await wait_for(lambda: processed(metrics, "ok") == 2 and processed(metrics, "dead") == 1)
        assert sorted(e.id for e in actor.handled) == sorted([ids[0], ids[2]])


async def test_an_output_redis_refuses_fails_its_own_event_and_not_its_neighbours() -> None:
    actor = Recording()
    async with running(actor) as (_, transport, metrics):
        await transport.redis.set("not:a:stream", "x")  # XADD to it is refused: WRONGTYPE
        ids = await send(transport, {"append_to": "not:a:stream"}, {"append_to": "fine"})
        await wait_for(lambda: processed(metrics, "ok") == 1 and processed(metrics, "retried"))
        fine: Any = await transport.redis.xrange("fine")
        assert [f[b"id"].decode() for _, f in fine] == [ids[1]]
        await wait_for(lambda: processed(metrics, "dead") == 1, timeout=10)
        [letter] = await dead_letters(transport)
        assert (letter[b"id"].decode(), letter[b"reason"]) == (ids[0], b"output_error")


async def test_record_updates_are_written_with_the_outputs_and_read_back() -> None:
    actor = Recording()
    async with running(actor, "stream") as (_, transport, metrics):
        first = await send(transport, {"record": "visit:1", "set": "visit:1"})
        await wait_for(lambda: processed(metrics, "ok") == 1)
        second = await send(transport, {"record": "visit:1", "set": "visit:1"})
        await wait_for(lambda: processed(metrics, "ok") == 2)
        key = keys.record("work", "visit:1")
        stored: Any = await transport.redis.hgetall(key)
        assert 0 < await transport.redis.pttl(key) <= 60_000  # bounded: it goes away
    assert actor.seen_records == [{}, {first[0]: "0"}]  # the second saw the first's update
    assert stored == {first[0].encode(): b"0", second[0].encode(): b"0"}


async def test_a_record_update_redis_refuses_fails_its_own_event_only() -> None:
    actor = Recording()
    async with running(actor) as (_, transport, metrics):
        await transport.redis.set(keys.record("work", "taken"), "x")  # HSET on it: WRONGTYPE
        ids = await send(transport, {"set": "taken"}, {"set": "fine"})
        await wait_for(lambda: processed(metrics, "dead") == 1, timeout=10)
        [letter] = await dead_letters(transport)
        assert (letter[b"id"].decode(), letter[b"reason"]) == (ids[0], b"output_error")
        fine: Any = await transport.redis.hgetall(keys.record("work", "fine"))
        assert fine == {ids[1].encode(): b"0"}


async def test_an_entry_with_no_envelope_is_kept_as_a_dead_letter_and_acknowledged() -> None:
    async with running(Recording()) as (_, transport, metrics):
        await transport.redis.xadd(keys.stream("work"), {"e": b"\xc1 not an envelope"})
        letters = await wait_for(lambda: dead_letters(transport))
        assert letters[0][b"reason"] == b"decode_error"
        assert await pending(transport) == 0
        rejected = metrics.registry.get_sample_value(
            "switchyard_events_rejected_total", {"reason": "decode_error"}
        )
        assert rejected == 1


@pytest.mark.parametrize("mode", ["queue", "stream"])
async def test_stop_drains_what_was_fetched_before_it_returns(mode: str) -> None:
    actor = Recording()
    async with running(actor, mode) as (pool, transport, metrics):
        await send(transport, *({"n": n} for n in range(10)))
        await wait_for(lambda: pool.inflight or processed(metrics, "ok"))
    assert await pending(transport) == 0
    assert processed(metrics, "ok") == len(actor.handled)


class LosesItsFirstCancel:
    """A pool helper that swallows the first cancel it gets, as a redis-py call sometimes does
    (seen on the promoter: its task went on "cancelling" and its pool's restart hung)."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.cancels = 0

    async def run(self) -> None:
        while True:
            try:
                self.waiting.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancels += 1
                if self.cancels > 1:
                    raise


async def test_a_failed_read_ends_the_pool_even_when_a_helper_lost_its_cancel() -> None:
    pool, _, _ = make_pool(Recording())
    helper = LosesItsFirstCancel()
    pool.promoter.run = helper.run  # type: ignore[method-assign]

    async def failing_read() -> None:
        await helper.waiting.wait()
        raise RuntimeError("WRONGTYPE, say: the stream key was overwritten")

    pool.reader.run = failing_read  # type: ignore[method-assign]
    # The pool fails, so that its supervisor can restart it, rather than hang on the helper
    # (where no cancel can end it either: its task group cancels its helpers only once).
    run = asyncio.create_task(pool.run())
    await asyncio.wait([run], timeout=10)
    assert run.done(), "the pool hung on a helper that lost its cancel"
    with pytest.raises(ExceptionGroup) as failed:
        run.result()
    assert [type(error) for error in failed.value.exceptions] == [RuntimeError]
    assert helper.cancels == 2
    assert not pool.running


async def test_a_settle_under_way_when_the_pool_fails_finishes_and_is_counted() -> None:
    pool, transport, metrics = make_pool(Recording())
    settling, answer = asyncio.Event(), asyncio.Event()
    settle = transport.settle

    async def slow_settle(*args: Any, **kwargs: Any) -> None:
        settling.set()
        await answer.wait()  # Redis is slow to answer this flush's XACK
        await settle(*args, **kwargs)

    transport.settle = slow_settle  # type: ignore[method-assign]
    failing = asyncio.Event()

    async def failing_promoter() -> None:
        await failing.wait()
        raise RuntimeError("a helper failed: its task group cancels the rest")

    pool.promoter.run = failing_promoter  # type: ignore[method-assign]
    run = asyncio.create_task(pool.run())
    await send(transport, {"n": 1})
    async with asyncio.timeout(5):
        await settling.wait()
    failing.set()  # the pool fails with the flush under way: it stops its handlers first

    def handlers_left() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("pool:work:handler")]

    await wait_for(lambda: not handlers_left())
    answer.set()  # and only then does Redis answer
    await asyncio.wait([run], timeout=10)
    with pytest.raises(ExceptionGroup):
        run.result()
    assert processed(metrics, "ok") == 1  # acknowledged in Redis, and counted here too
    assert await pending(transport) == 0
