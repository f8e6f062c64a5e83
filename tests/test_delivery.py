"""Delivery semantics against a real redis-server (DESIGN.md, "Delivery semantics").

Retries through the durable delay queue, dead letters, handler timeouts, reclaim of a dead
consumer's entries, poison entries, lease renewal between two instances, effectively-once
emits, timed waits and pool supervision. Events enter over HTTP; the test actor
(`actors_for_tests:Steered`) records every run with its attempt number and wall-clock start.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from actors_for_tests import probe, runs
from helpers import (
    GROUP,
    Serve,
    pending,
    post_accepted,
    processed,
    routed_class,
    sample,
    stream_entries,
)
from servers import wait_for

from router.config import Config, parse_config
from router.streams import keys
from router.streams.envelope import Envelope, new_event_id
from router.streams.redis import RedisTransport
from router.streams.transport import Outgoing, Transport
from router.tasks import cancel_and_wait

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp
    from redis.asyncio import Redis

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("probes", "steered_runs")]

DEAD_CONSUMER = "dead-consumer"


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every delivery test runs on a single Redis and on the 3-master cluster."""
    return any_redis_url


@pytest_asyncio.fixture
async def raw_transport(redis: Redis) -> AsyncIterator[Transport]:
    """A Transport on the test's Redis, as another process (or a dead consumer) would have."""
    yield RedisTransport(redis, GROUP, "test-transport")


def make_config(redis_url: str, body: str) -> Config:
    """Quick reads, a free HTTP port, two lanes, plus `body` (routes and classes)."""
    return parse_config(f"""
service: {{drain_timeout_s: 5}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
lanes: [{{name: high}}, {{name: low}}]
{body}""")


def work_class(
    options: str = "", settings: str = "", name: str = "work", concurrency: int = 2
) -> str:
    """Routes `work/<x>` to class `work`, handled by a Steered actor recorded as `name`."""
    return routed_class(
        "work",
        "actors_for_tests:Steered",
        f"name: {name}{', ' + options if options else ''}",
        concurrency=concurrency,
        settings=settings,
    )


def downstream_class(cls: str, settings: str = "") -> str:
    """A class `cls` (no route; reached by emits) handled by a Steered actor named `cls`."""
    return f"""
  {cls}:
    lane: low
    actor: actors_for_tests:Steered
    mode: queue
    concurrency: 2
    options: {{name: {cls}}}
    {settings}
"""


async def pending_entries(redis: Redis, cls: str) -> list[dict[str, Any]]:
    """XPENDING with details: message_id, consumer, time_since_delivered, times_delivered."""
    found: Any = await redis.xpending_range(keys.stream(cls), GROUP, min="-", max="+", count=100)
    return list(found)


async def waiting_in_delay_queue(redis: Redis, cls: str) -> tuple[Envelope, float, int] | None:
    """(envelope, due in Unix seconds, XPENDING count), read in one MULTI, while exactly one
    event of `cls` waits in its delay queue; None while none does."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrange(keys.delayed(cls), 0, -1, withscores=True)
        pipe.xpending(keys.stream(cls), GROUP)
        delayed, summary = await pipe.execute()
    if not delayed:
        return None
    [(member, score)] = delayed
    return Envelope.decode(member), float(score) / 1000, int(summary["pending"])


async def waiting_attempt(
    redis: Redis, cls: str, attempt: int
) -> tuple[Envelope, float, int] | None:
    """Like `waiting_in_delay_queue`, but only once the waiting event is at `attempt`."""
    found = await waiting_in_delay_queue(redis, cls)
    return found if found is not None and found[0].attempt == attempt else None


def envelope_for(cls: str, lane: str, payload: dict[str, Any]) -> Envelope:
    return Envelope(
        id=new_event_id(),
        cls=cls,
        lane=lane,
        payload=payload,
        key=str(payload.get("key")),
        ingest_ts=time.time(),
    )


async def left_pending_by_a_dead_consumer(redis: Redis, cls: str, count: int) -> list[bytes]:
    """Append `count` events to `cls` and read them as a consumer that never acknowledges.

    Returns their stream ids, each delivered once to DEAD_CONSUMER.
    """
    stream = keys.stream(cls)
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for n in range(count):
        data = envelope_for(cls, "high", {"key": f"k{n}", "n": n}).encode()
        await redis.xadd(stream, {keys.ENVELOPE_FIELD: data})
    reply: Any = await redis.xreadgroup(GROUP, DEAD_CONSUMER, {stream: ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]]


# --- retries through the delay queue ---

RETRY_BACKOFF_S = 0.5  # each wait long enough to be seen in the delay queue on a busy machine


async def test_a_handler_that_fails_twice_is_handled_on_the_third_attempt_after_backoff(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    settings = f"retry: {{max_attempts: 3, backoff_ms: {RETRY_BACKOFF_S * 1000:.0f}, jitter: 0}}"
    config = make_config(redis_url, work_class(options="fail_first: 2", settings=settings))
    record = runs("work")
    async with serve(config) as service:
        [event_id] = await post_accepted(http, service, "work/1", {"key": "k"})

        # After each failure the entry is acknowledged and the event waits in the delay queue
        # (a sorted set by due time), due one backoff after the failed run (doubling).
        for attempt in (1, 2):
            envelope, due, pending_now = await wait_for(
                functools.partial(waiting_attempt, redis, "work", attempt),
                message=f"attempt {attempt} waiting in the delay queue",
            )
            assert envelope.id == event_id
            assert pending_now == 0, "a retried entry must be acknowledged while it waits"
            [failed_run_start] = [t for _, a, t in record.runs if a == attempt - 1]
            backoff = RETRY_BACKOFF_S * 2 ** (attempt - 1)
            assert failed_run_start + backoff <= due <= failed_run_start + backoff + 0.3

        await wait_for(lambda: processed(service, "work", "ok") == 1, timeout=5)
        assert [attempt for _, attempt, _ in record.runs] == [0, 1, 2]
        assert {event for event, _, _ in record.runs} == {event_id}
        # no run starts before its due time
        for (_, _, earlier), (_, _, later), attempt in zip(
            record.runs[:-1], record.runs[1:], (1, 2), strict=True
        ):
            assert later - earlier >= RETRY_BACKOFF_S * 2 ** (attempt - 1) - 0.005
        assert processed(service, "work", "retried") == 2
        assert processed(service, "work", "dead") == 0
        assert probe("work").handled_ids() == [event_id]
        assert await pending(redis, "work") == 0
        assert await redis.zcard(keys.delayed("work")) == 0
        assert await redis.xlen(keys.dead_letters("work")) == 0


async def test_a_handler_that_always_fails_is_dead_lettered_after_exactly_max_attempts_runs(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    settings = "retry: {max_attempts: 3, backoff_ms: 20}"
    config = make_config(redis_url, work_class(settings=settings))
    record = runs("work")
    async with serve(config) as service:
        payload = {"key": "k", "fail": "the seat does not exist"}
        [event_id] = await post_accepted(http, service, "work/1", payload)

        await wait_for(lambda: processed(service, "work", "dead") == 1, timeout=5)
        assert [(event, attempt) for event, attempt, _ in record.runs] == [
            (event_id, 0),
            (event_id, 1),
            (event_id, 2),
        ]
        assert processed(service, "work", "retried") == 2
        assert processed(service, "work", "ok") == 0
        [dead] = await stream_entries(redis, keys.dead_letters("work"))
        assert dead["id"] == event_id.encode()
        assert dead["class"] == b"work"
        assert dead["reason"] == b"handler_error"
        assert dead["error_type"] == b"HandlerFailed"
        assert b"the seat does not exist" in dead["error"]
        assert int(dead["attempts"]) == 3
        envelope = Envelope.decode(dead["envelope"])
        assert (envelope.id, envelope.cls, envelope.payload) == (event_id, "work", payload)
        assert envelope.attempt == 2
        # nothing left to run it a fourth time
        assert await pending(redis, "work") == 0
        assert await redis.zcard(keys.delayed("work")) == 0
        assert len(record.runs) == 3


async def test_a_handler_that_hangs_past_timeout_ms_fails_with_timeout_and_the_pool_goes_on(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    # One worker: the event after the hanging one can only run once the timeout freed it.
    settings = "timeout_ms: 200\n    retry: {max_attempts: 1}"
    config = make_config(redis_url, work_class(settings=settings, concurrency=1))
    record = runs("work")
    async with serve(config) as service:
        hung, after = await post_accepted(
            http, service, "work/1", [{"key": "a", "hang": True}, {"key": "b"}]
        )

        await wait_for(lambda: probe("work").handled_ids() == [after], timeout=5)
        await wait_for(lambda: processed(service, "work", "dead") == 1)
        [dead] = await stream_entries(redis, keys.dead_letters("work"))
        assert dead["id"] == hung.encode()
        assert dead["error_type"] == b"TimeoutError"
        assert b"timeout_ms=200" in dead["error"]
        [(_, _, hung_start)] = record.runs_of(hung)
        [(_, _, after_start)] = record.runs_of(after)
        assert after_start - hung_start >= 0.2
        await wait_for(lambda: processed(service, "work", "ok") == 1)
        assert await pending(redis, "work") == 0


# --- crash recovery: reclaim and poison ---


async def test_entries_left_pending_by_a_dead_consumer_are_reclaimed_after_claim_idle_and_handled(
    serve: Serve, redis_url: str, redis: Redis
) -> None:
    entry_ids = await left_pending_by_a_dead_consumer(redis, "work", 3)
    left_at = time.time()
    config = make_config(redis_url, work_class(settings="claim_idle_ms: 300"))
    record = runs("work")
    async with serve(config) as service:
        await wait_for(lambda: len(probe("work").handled) == 3, timeout=5)

        # none was taken over before it had been idle for claim_idle_ms
        assert min(start for _, _, start in record.runs) - left_at >= 0.3
        assert len(record.runs) == 3
        await wait_for(lambda: processed(service, "work", "ok") == 3)
        assert await pending(redis, "work") == 0
        consumers: Any = await redis.xinfo_consumers(keys.stream("work"), GROUP)
        dead = [c for c in consumers if c["name"] in (DEAD_CONSUMER, DEAD_CONSUMER.encode())]
        assert [int(c["pending"]) for c in dead] == [0]
        assert len(entry_ids) == 3


async def test_an_entry_delivered_more_than_max_deliveries_times_is_dead_lettered_as_poison(
    serve: Serve, redis_url: str, redis: Redis
) -> None:
    poison_id, fine_id = await left_pending_by_a_dead_consumer(redis, "work", 2)
    stream = keys.stream("work")
    # Delivered 3 times (= max_deliveries): the reclaim is its 4th delivery, one too many.
    # The other one was delivered twice: its reclaim is the 3rd delivery, still allowed.
    for entry_id in (poison_id, poison_id, fine_id):
        await redis.xclaim(stream, GROUP, DEAD_CONSUMER, 0, [entry_id])
    counts = {e["message_id"]: e["times_delivered"] for e in await pending_entries(redis, "work")}
    assert counts == {poison_id: 3, fine_id: 2}
    raw: Any = await redis.xrange(stream)
    poison_event = Envelope.decode(raw[0][1][keys.ENVELOPE_FIELD])
    fine_event = Envelope.decode(raw[1][1][keys.ENVELOPE_FIELD])
    settings = "claim_idle_ms: 300\n    max_deliveries: 3"
    config = make_config(redis_url, work_class(settings=settings))
    async with serve(config) as service:
        await wait_for(lambda: processed(service, "work", "dead") == 1, timeout=5)
        await wait_for(lambda: processed(service, "work", "ok") == 1, timeout=5)

        [dead] = await stream_entries(redis, keys.dead_letters("work"))
        assert dead["reason"] == b"poison"
        assert dead["id"] == poison_event.id.encode()
        assert b"delivered 4 times" in dead["error"]
        assert b"max_deliveries=3" in dead["error"]
        assert Envelope.decode(dead["envelope"]) == poison_event
        assert runs("work").runs_of(poison_event.id) == []
        assert len(runs("work").runs_of(fine_event.id)) == 1
        assert await pending(redis, "work") == 0


# Written and read in one script (atomic on a single Redis and on a cluster). ARGV: group,
# the dead consumer, `me`, then the envelopes; returns their stream ids.
INTERLEAVED = """
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i]) end
local function read(consumer, count)
  redis.call('XREADGROUP', 'GROUP', ARGV[1], consumer, 'COUNT', count, 'STREAMS', KEYS[1], '>')
end
read(ARGV[2], 1)
read(ARGV[3], #ids - 2)
read(ARGV[2], 1)
return ids
"""


async def interleaved_with_own_entries(
    redis: Redis, cls: str, me: str, own: int
) -> tuple[bytes, bytes, list[bytes]]:
    """A dead consumer's two entries with `own` entries of consumer `me` between them (two
    instances reading one stream interleave like this); written and read in one script so a
    running service cannot take any. The dead consumer's entries were delivered 3 times.

    Returns (first dead entry, last dead entry, the entries of `me`).
    """
    stream = keys.stream(cls)
    await RedisTransport(redis, GROUP, me).ensure_group(cls)
    events = [envelope_for(cls, "high", {"key": f"k{n}", "n": n}) for n in range(own + 2)]
    args = [GROUP, DEAD_CONSUMER, me, *(event.encode() for event in events)]
    ids: list[bytes] = await redis.eval(INTERLEAVED, 1, stream, *args)  # type: ignore[arg-type]
    first, last = ids[0], ids[-1]
    for _ in range(2):
        await redis.xclaim(stream, GROUP, DEAD_CONSUMER, 0, [first, last])
    return first, last, ids[1:-1]


async def test_a_claim_reports_the_delivery_count_of_every_entry_it_took_over(
    redis: Redis,
) -> None:
    """Even when this consumer holds entries of its own between the ones it claims."""
    me = RedisTransport(redis, GROUP, "instance-a")
    first, last, own = await interleaved_with_own_entries(redis, "work", me.consumer, own=4)

    async def idle_for(entry_id: bytes, ms: int) -> bool:
        [entry] = await redis.xpending_range(
            keys.stream("work"), GROUP, min=entry_id, max=entry_id, count=1
        )
        return int(entry["time_since_delivered"]) >= ms

    await wait_for(lambda: idle_for(last, 150))
    await me.renew("work", own)  # still being handled: not idle

    _, claimed = await me.claim_idle("work", 100, 10)

    assert {entry_id: delivered for entry_id, _, delivered in claimed} == {first: 4, last: 4}


async def test_poison_entries_are_caught_even_among_entries_this_instance_is_handling(
    serve: Serve, redis_url: str, redis: Redis
) -> None:
    # claim_idle well above the renewal period, so a loaded machine cannot let our own
    # entries go idle long enough to be reclaimed.
    settings = "claim_idle_ms: 1000\n    max_deliveries: 3"
    config = make_config(redis_url, work_class(settings=settings))
    async with serve(config) as service:
        me = service.transport.consumer
        first, last, own = await interleaved_with_own_entries(redis, "work", me, own=4)

        async def keep_leases() -> None:  # as the instance would for work it is handling
            while True:
                await service.transport.renew("work", own)
                await asyncio.sleep(0.05)

        leases = asyncio.create_task(keep_leases())
        try:
            await wait_for(
                lambda: processed(service, "work", "dead") + processed(service, "work", "ok") == 2,
                timeout=5,
            )
        finally:  # cancelled until done: a cancel can be lost inside a redis-py call
            await cancel_and_wait(leases)
        assert runs("work").runs == [], "a poison entry was handled"
        dead = await stream_entries(redis, keys.dead_letters("work"))
        assert [d["reason"] for d in dead] == [b"poison", b"poison"]
        poisoned = [Envelope.decode(d["envelope"]).id for d in dead]
        raw: Any = await redis.xrange(keys.stream("work"), min=first, max=first)
        raw += await redis.xrange(keys.stream("work"), min=last, max=last)
        assert sorted(poisoned) == sorted(
            Envelope.decode(fields[keys.ENVELOPE_FIELD]).id for _, fields in raw
        )


# --- lease renewal between two instances ---


async def test_a_slow_handler_keeps_its_lease_and_a_second_instance_does_not_take_it_over(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    claim_idle_ms = 900  # renewals a busy machine cannot make late enough to lose the lease
    settings = f"claim_idle_ms: {claim_idle_ms}"
    first = make_config(redis_url, work_class(name="first", settings=settings))
    second = make_config(redis_url, work_class(name="second", settings=settings))
    probe("first").gate.clear()
    probe("second").gate.clear()
    async with serve(first) as service_a, serve(second) as service_b:
        [event_id] = await post_accepted(http, service_a, "work/1", {"key": "slow"})
        # Whichever instance read it holds it (Redis serves the reader blocked first, which a
        # busy machine makes either); the other must never take it over.
        await wait_for(lambda: probe("first").active + probe("second").active == 1)
        holder, other = ("first", "second") if probe("first").active else ("second", "first")
        services = {"first": service_a, "second": service_b}
        await wait_for(lambda: services[other].pools["work"].running)
        owner = services[holder].transport.consumer

        # Watch the entry for several claim_idle periods: its idle time keeps being reset by
        # the holder's lease renewal, so it never becomes claimable.
        seen_idle: list[int] = []
        renewals = 0

        async def renewed_enough() -> bool:
            nonlocal renewals
            found = await pending_entries(redis, "work")
            assert len(found) == 1, f"no longer pending with the holder: {found}"
            [entry] = found
            assert entry["consumer"] == owner.encode(), "the entry changed hands"
            assert entry["times_delivered"] == 1
            idle = int(entry["time_since_delivered"])
            if seen_idle and idle < seen_idle[-1]:
                renewals += 1
            seen_idle.append(idle)
            return renewals >= 9  # about three claim_idle periods

        await wait_for(renewed_enough, timeout=10, interval=0.02)
        assert max(seen_idle) < claim_idle_ms
        assert probe(other).started == []

        probe(holder).gate.set()
        await wait_for(lambda: processed(services[holder], "work", "ok") == 1)
        assert [run[0] for run in runs(holder).runs] == [event_id]
        assert probe(other).started == []
        assert runs(other).runs == []
        assert processed(services[other], "work", "ok") == 0
        assert await pending(redis, "work") == 0


# --- effectively-once emits ---


async def test_publishing_the_same_child_id_twice_delivers_the_child_once(
    serve: Serve, redis_url: str, redis: Redis, raw_transport: Transport
) -> None:
    config = make_config(redis_url, work_class() + downstream_class("child"))
    async with serve(config) as service:
        child = envelope_for("child", "low", {"key": "k"})
        item = Outgoing("child", child.encode(), dedup_id=f"{child.id}")

        first = await raw_transport.publish([item])
        again = await raw_transport.publish([item, item])

        assert first[0] is not None
        assert first[0] != b"delayed"
        assert again == [None, None]
        await wait_for(lambda: processed(service, "child", "ok") == 1)
        assert probe("child").handled_ids() == [child.id]
        assert await redis.xlen(keys.stream("child")) == 1


async def test_a_child_id_is_accepted_again_only_after_the_dedup_window(
    redis: Redis,
) -> None:
    # Two writes must fit in the window however loaded the machine: two writes to the
    # cluster once took longer than the 0.3 s this test had.
    window_s = 2.0
    transport = RedisTransport(redis, GROUP, "test", dedup_window_s=window_s)
    item = Outgoing("child", envelope_for("child", "low", {"key": "k"}).encode(), dedup_id="p.0")
    started = time.monotonic()  # the window opens later, as the first write runs in Redis
    assert (await transport.publish([item]))[0] is not None
    assert await transport.publish([item]) == [None]

    async def accepted_again() -> bool:
        return (await transport.publish([item]))[0] is not None

    await wait_for(accepted_again, timeout=10)
    # Redis expires the id by its own clock, in whole milliseconds: a hair early by ours.
    assert time.monotonic() - started >= window_s - 0.05
    assert await redis.xlen(keys.stream("child")) == 2


async def test_a_parent_handled_twice_after_its_settle_failed_past_the_emit_write_emits_once(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = work_class(options="emit_to: [child]", settings="claim_idle_ms: 300")
    config = make_config(redis_url, body + downstream_class("child"))
    async with serve(config) as service:
        real_settle = service.transport.settle
        crashes: list[str] = []

        async def settle(
            cls: str,
            entry_ids: Any,
            retries: Any = (),
            dead: Any = (),
        ) -> None:
            # The emit is written; the ack is refused, together and then on its own.
            if cls == "work" and len(crashes) < 2:
                crashes.append(cls)
                raise RuntimeError("redis refused the settle after the emits were written")
            await real_settle(cls, entry_ids, retries, dead)

        monkeypatch.setattr(service.transport, "settle", settle)
        [parent_id] = await post_accepted(http, service, "work/1", {"key": "k"})

        await wait_for(lambda: processed(service, "work", "ok") == 1, timeout=10)
        assert crashes == ["work", "work"]
        assert sample(service, "switchyard_pool_restarts_total", {"class": "work"}) == 0
        assert len(runs("work").runs_of(parent_id)) == 2, "the parent was not handled twice"
        await wait_for(lambda: processed(service, "child", "ok") >= 1)
        assert await redis.xlen(keys.stream("child")) == 1
        assert probe("child").handled_ids() == [f"{parent_id}.0"]
        assert processed(service, "child", "ok") == 1
        assert await pending(redis, "work") == 0


# --- timed waits ---


async def test_a_delayed_emit_waits_in_the_delay_queue_and_its_latency_counts_from_release(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    delay_s = 0.5
    body = work_class(options=f"emit_to: [later], emit_delay_s: {delay_s}")
    config = make_config(redis_url, body + downstream_class("later"))
    async with serve(config) as service:
        [parent_id] = await post_accepted(http, service, "work/1", {"key": "k"})

        envelope, due, _ = await wait_for(lambda: waiting_in_delay_queue(redis, "later"))
        [(child_id, emitted_at)] = runs("work").emitted
        assert envelope.id == child_id == f"{parent_id}.0"
        assert emitted_at + delay_s - 0.1 <= due <= emitted_at + delay_s + 0.1
        assert envelope.ingest_ts == pytest.approx(due, abs=0.002)
        assert await redis.xlen(keys.stream("later")) == 0
        assert probe("later").started == []

        await wait_for(lambda: processed(service, "later", "ok") == 1, timeout=5)
        handled_by = time.time()
        [(_, _, started)] = runs("later").runs
        assert started >= emitted_at + delay_s - 0.001  # due times are kept in whole ms
        # soon after its due time: not at the next idle poll of the delay queue (a second)
        assert started - due < 0.6, f"released {started - due:.3f}s after its due time"
        assert await redis.zcard(keys.delayed("later")) == 0
        latency = sample(service, "switchyard_event_latency_seconds_sum", {"class": "later"})
        # measured from the release (the due time), not from the emit
        assert 0 <= latency <= handled_by - due + 0.01
        assert latency < handled_by - emitted_at - delay_s + 0.01


async def test_a_retry_runs_soon_after_its_backoff_even_when_the_delay_queue_was_idle(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """A retry's backoff ends at its due time, not at the next idle poll of the delay queue
    (which used to be a whole second: a 50 ms backoff took a second)."""
    settings = "retry: {max_attempts: 2, backoff_ms: 50, jitter: 0}"
    config = make_config(redis_url, work_class(options="fail_first: 1", settings=settings))
    record = runs("work")
    async with serve(config) as service:
        # Let the pool's delay-queue task find the queue empty and go idle first.
        await wait_for(lambda: service.pools["work"].running)
        await post_accepted(http, service, "work/1", {"key": "k"})

        await wait_for(lambda: processed(service, "work", "ok") == 1, timeout=5)
        [(_, _, failed), (_, _, retried)] = record.runs
        # a margin for a loaded machine, still well short of the idle poll's whole second
        assert 0.05 <= retried - failed < 0.05 + 0.5, (
            f"the retry ran {retried - failed:.3f}s after the failure, for a 0.05s backoff"
        )


# --- supervision ---


async def test_a_pool_whose_actor_fails_to_start_is_restarted_with_backoff_and_then_handles(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession
) -> None:
    config = make_config(redis_url, work_class(options="fail_starts: 2"))
    async with serve(config) as service:
        url = f"http://127.0.0.1:{service.http_port}/readyz"
        async with http.get(url) as response:
            assert response.status == 503
            assert "pool work is not running" in (await response.json())["problems"]
        # Kept in Redis meanwhile.
        [event_id] = await post_accepted(http, service, "work/1", {"key": "k"})

        async def ready() -> bool:
            async with http.get(url) as response:
                return response.status == 200

        await wait_for(ready, timeout=10)
        assert sample(service, "switchyard_pool_restarts_total", {"class": "work"}) == 2
        assert runs("work").starts == 3
        await wait_for(lambda: processed(service, "work", "ok") == 1, timeout=5)
        assert probe("work").handled_ids() == [event_id]


async def test_the_inflight_gauge_sums_a_class_s_partitions_and_falls_once_they_settle(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession
) -> None:
    """`switchyard_inflight` is what this process holds of the class, every partition's
    entries together (each pool used to overwrite it with its own count)."""
    first = next(f"k{n}" for n in range(100) if keys.tag_for("work", f"k{n}", 2) == "work#0")
    second = next(f"k{n}" for n in range(100) if keys.tag_for("work", f"k{n}", 2) == "work#1")
    settings = "partitions: 2\n    timeout_ms: 3000\n    retry: {max_attempts: 1}"
    config = make_config(redis_url, work_class(settings=settings, concurrency=2))
    async with serve(config) as service:
        hanging = [{"key": key, "hang": True} for key in (first, first, second, second)]
        await post_accepted(http, service, "work/1", hanging)

        def inflight() -> float:
            return sample(service, "switchyard_inflight", {"class": "work"})

        await wait_for(lambda: inflight() == 4, timeout=10)
        await wait_for(lambda: processed(service, "work", "dead") == 4, timeout=20)
        await wait_for(lambda: inflight() == 0, timeout=10)
