"""Actor pools against a real redis-server: stream, queue and batch modes, emits, failures.

Events enter over HTTP like in production; the test actors (tests/actors_for_tests.py) record
what they handled and can be held on a gate, so that what is "in flight" is exact.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from actors_for_tests import probe
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
from router.streams.envelope import Envelope

if TYPE_CHECKING:
    import aiohttp
    from redis.asyncio import Redis

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("probes")]


def make_config(redis_url: str, body: str) -> Config:
    """A config on the test's Redis with quick reads, a free HTTP port and lanes, plus `body`."""
    header = f"""
service: {{drain_timeout_s: 10}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
lanes: [{{name: high}}, {{name: low}}]
"""
    return parse_config(header + body)


def one_class(mode: str, concurrency: int, extra: str = "", options: str = "") -> str:
    """Routes `work/<anything>` to class `work` (key: payload.key), recorded as "work"."""
    return routed_class(
        "work",
        "actors_for_tests:Recorder",
        f"name: work{options}",
        mode=mode,
        concurrency=concurrency,
        settings=extra,
    )


async def undelivered(redis: Redis, cls: str) -> int:
    """Entries of `cls` never delivered to any consumer (the group's lag, XINFO GROUPS)."""
    groups: Any = await redis.xinfo_groups(keys.stream(cls))
    [group] = [g for g in groups if g["name"] in (GROUP, GROUP.encode())]
    return int(group["lag"])


def seqs_by_key(events: list[Envelope]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for event in events:
        out.setdefault(str(event.key), []).append(event.payload["seq"])
    return out


# --- stream mode ---


async def test_events_with_the_same_key_are_handled_one_at_a_time_in_stream_order(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    # Yielding handlers: in a mode without per-key ordering they would overlap and reorder.
    config = make_config(redis_url, one_class("stream", 4, options=", yields: 5"))
    events = [{"key": key, "seq": seq} for seq in range(10) for key in ("a", "b")]
    async with serve(config) as service:
        await post_accepted(http, service, "work/1", events)

        await wait_for(lambda: len(work.handled) == 20)
        assert seqs_by_key(work.started) == {"a": list(range(10)), "b": list(range(10))}
        assert work.max_per_key == 1
        await wait_for(lambda: processed(service, "work", "ok") == 20)
        assert await pending(redis, "work") == 0


async def test_different_keys_are_handled_concurrently_up_to_the_concurrency(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    work.gate.clear()
    config = make_config(redis_url, one_class("stream", 3))
    # The first three entries have distinct keys; later ones queue behind their key.
    events = [{"key": f"k{n % 3}", "seq": n // 3} for n in range(9)]
    async with serve(config) as service:
        await post_accepted(http, service, "work/1", events)

        await wait_for(lambda: work.active == 3)
        assert sorted(str(e.key) for e in work.started) == ["k0", "k1", "k2"]
        assert await pending(redis, "work") == 3
        assert await undelivered(redis, "work") == 6

        work.gate.set()
        await wait_for(lambda: len(work.handled) == 9)
        assert seqs_by_key(work.handled) == {k: [0, 1, 2] for k in ("k0", "k1", "k2")}
        assert work.max_active == 3
        assert work.max_per_key == 1


# --- queue mode ---


async def test_a_queue_pool_runs_at_most_concurrency_handlers_and_leaves_the_rest_in_redis(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    work.gate.clear()
    config = make_config(redis_url, one_class("queue", 3))
    # One key for all: queue mode ignores it, so the events still run side by side.
    async with serve(config) as service:
        ids = await post_accepted(
            http, service, "work/1", [{"key": "same", "seq": n} for n in range(8)]
        )

        await wait_for(lambda: work.active == 3)
        assert await pending(redis, "work") == 3
        assert await undelivered(redis, "work") == 5
        assert service.pools["work"].inflight == 3
        assert len(work.started) == 3

        work.gate.set()
        await wait_for(lambda: processed(service, "work", "ok") == 8)
        assert sorted(work.handled_ids()) == sorted(ids)
        assert work.max_active == 3
        assert await pending(redis, "work") == 0
        assert await undelivered(redis, "work") == 0


# --- batch mode ---


def batch_class(max_size: int, max_wait_ms: int, concurrency: int = 1, extra: str = "") -> str:
    return one_class(
        "batch",
        concurrency,
        extra=f"    batch: {{max_size: {max_size}, max_wait_ms: {max_wait_ms}}}\n{extra}",
    )


NO_RETRIES = "    retry: {max_attempts: 1}\n"


async def test_a_batch_is_handed_over_as_soon_as_it_reaches_max_size(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    work.gate.clear()
    # max_wait_ms is far beyond the waits below: only reaching max_size can flush in time.
    config = make_config(redis_url, batch_class(max_size=3, max_wait_ms=60_000))
    async with serve(config) as service:
        first = await post_accepted(
            http, service, "work/1", [{"key": "a", "seq": n} for n in range(2)]
        )
        third = await post_accepted(http, service, "work/1", {"key": "a", "seq": 2})

        await wait_for(lambda: len(work.batches) == 1, timeout=5)
        assert [e.id for e in work.batches[0]] == first + third
        # Held in the handler: the whole batch is pending, none of it acknowledged yet, and
        # with its one slot taken the pool leaves the next events in Redis.
        later = await post_accepted(
            http, service, "work/1", [{"key": "b", "seq": n} for n in range(3)]
        )
        assert await pending(redis, "work") == 3
        assert await undelivered(redis, "work") == 3

        work.gate.set()
        await wait_for(lambda: processed(service, "work", "ok") == 6, timeout=5)
        assert [[e.id for e in batch] for batch in work.batches] == [first + third, later]
        assert await pending(redis, "work") == 0


async def test_a_partial_batch_is_handed_over_after_max_wait_ms(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    max_wait_s = 0.3
    config = make_config(redis_url, batch_class(max_size=100, max_wait_ms=int(max_wait_s * 1000)))
    async with serve(config) as service:
        posted_at = time.monotonic()
        ids = await post_accepted(
            http, service, "work/1", [{"key": "a", "seq": n} for n in range(2)]
        )

        await wait_for(lambda: len(work.batches) == 1, timeout=5)
        [batch] = work.batches
        assert [e.id for e in batch] == ids
        assert work.batch_times[0] - posted_at >= max_wait_s * 0.9  # it waited for more
        await wait_for(lambda: processed(service, "work", "ok") == 2)


async def test_stop_hands_over_a_partly_gathered_batch_without_waiting_out_max_wait_ms(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    # The batch would wait 60 s for more events; drain allows 2 s. Stopping must hand the
    # fetched event to the actor and acknowledge it, not leave it pending for a reclaim.
    config = make_config(redis_url, batch_class(max_size=100, max_wait_ms=60_000))
    config = config.model_copy(
        update={"service": config.service.model_copy(update={"drain_timeout_s": 2.0})}
    )
    async with serve(config) as service:
        ids = await post_accepted(http, service, "work/1", {"key": "a"})
        await wait_for(lambda: pending(redis, "work"))  # fetched, gathering more

        await service.stop()

        assert work.handled_ids() == ids, "the partial batch was never handed to the actor"
        assert await pending(redis, "work") == 0


async def test_a_failed_batch_goes_to_the_dead_letters_whole(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    config = make_config(redis_url, batch_class(3, 60_000, extra=NO_RETRIES))
    async with serve(config) as service:
        events = [{"key": "a"}, {"key": "b", "fail": "bad reading"}, {"key": "c"}]
        ids = await post_accepted(http, service, "work/1", events)

        await wait_for(lambda: processed(service, "work", "dead") == 3)
        assert await pending(redis, "work") == 0
        dead = await stream_entries(redis, keys.dead_letters("work"))
        assert [d["id"].decode() for d in dead] == ids
        assert {d["error_type"] for d in dead} == {b"HandlerFailed"}
        assert [Envelope.decode(d["envelope"]).id for d in dead] == ids


# --- emits between classes ---

EMITTING = """
routes:
  - topic: work/+
    class: work
    key: key
  - topic: kids/+
    class: kid
    key: topic.1
classes:
  work:
    lane: high
    actor: actors_for_tests:Recorder
    mode: queue
    concurrency: 2
    options: {{name: work, emit_to: [{target}]}}
    retry: {{max_attempts: 1}}
  child:
    lane: low
    actor: actors_for_tests:Recorder
    mode: queue
    options: {{name: child}}
  kid:
    lane: low
    actor: actors_for_tests:Recorder
    mode: stream
    options: {{name: kid}}
"""


@pytest.mark.parametrize(
    "route",
    [("child", "child", "parent-key"), ("kids/k7", "kid", "k7")],
    ids=["by-class-name", "by-topic"],
)
async def test_an_emitted_event_reaches_the_downstream_actor_with_a_derived_id(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    http: aiohttp.ClientSession,
    route: tuple[str, str, str],
) -> None:
    target, cls, key = route  # emit target, the class it lands in, and the child's key
    downstream = probe(cls)
    downstream.gate.clear()  # keep the child in flight: its stream entry stays pending
    payload = {"key": "parent-key", "order": 66}
    async with serve(make_config(redis_url, EMITTING.format(target=target))) as service:
        [parent_id] = await post_accepted(http, service, "work/1", payload)

        await wait_for(lambda: len(downstream.started) == 1)
        [child] = downstream.started
        assert child.id == f"{parent_id}.0"
        assert child.cls == cls
        assert child.payload == payload
        assert child.key == key
        assert child.source == "emit:work"
        # the parent is acknowledged, and the emitted entry is durable in the child's stream
        await wait_for(lambda: processed(service, "work", "ok") == 1)
        assert await pending(redis, "work") == 0
        assert await redis.xlen(keys.stream(cls)) == 1
        ingested = service.metrics.registry.get_sample_value(
            "switchyard_events_ingested_total", {"class": cls, "source": "emit"}
        )
        assert ingested == 1
        downstream.gate.set()
        await wait_for(lambda: processed(service, cls, "ok") == 1)


async def test_a_parent_whose_emit_cannot_be_written_is_retried_and_goes_through_once_it_can(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    work.gate.clear()
    emitting = EMITTING.format(target="child").replace("max_attempts: 1", "max_attempts: 5")
    async with serve(make_config(redis_url, emitting)) as service:
        [blocked] = await post_accepted(http, service, "work/1", {"key": "k"})
        await wait_for(lambda: work.active == 1)
        # The child's stream key now holds a string: every XADD to it fails (WRONGTYPE).
        await redis.delete(keys.stream("child"))
        await redis.set(keys.stream("child"), "not a stream")
        [fine] = await post_accepted(http, service, "work/2", {"key": "j"})
        work.gate.set()

        # The refused emit fails its own parent, which waits for a retry; never "ok" without it.
        await wait_for(lambda: processed(service, "work", "retried") >= 1, timeout=5)
        assert processed(service, "work", "ok") == 0
        assert sample(service, "switchyard_pool_restarts_total", {"class": "work"}) == 0
        await redis.delete(keys.stream("child"))  # fixed: the retries go through

        await wait_for(lambda: processed(service, "work", "ok") == 2, timeout=10)
        await wait_for(lambda: len(probe("child").handled) == 2, timeout=10)
        assert sorted(e.id for e in probe("child").handled) == [f"{blocked}.0", f"{fine}.0"]
        assert await pending(redis, "work") == 0


# --- handler failures ---


async def test_a_failing_handler_sends_the_event_to_dead_letters_and_the_pool_goes_on(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    config = make_config(redis_url, one_class("queue", 2, extra=NO_RETRIES))
    async with serve(config) as service:
        [failed_id] = await post_accepted(
            http, service, "work/1", {"key": "k", "fail": "no such seat"}
        )

        await wait_for(lambda: processed(service, "work", "dead") == 1)
        assert await pending(redis, "work") == 0
        [dead] = await stream_entries(redis, keys.dead_letters("work"))
        assert dead["id"] == failed_id.encode()
        assert dead["reason"] == b"handler_error"
        assert dead["error_type"] == b"HandlerFailed"
        assert b"no such seat" in dead["error"]
        assert dead["attempts"] == b"1"
        envelope = Envelope.decode(dead["envelope"])
        assert envelope.payload == {"key": "k", "fail": "no such seat"}

        later = await post_accepted(
            http, service, "work/1", [{"key": "k", "n": n} for n in range(3)]
        )
        await wait_for(lambda: processed(service, "work", "ok") == 3)
        assert sorted(work.handled_ids()) == sorted(later)
        assert processed(service, "work", "dead") == 1
        assert await redis.xlen(keys.dead_letters("work")) == 1


async def test_a_failed_handler_emits_nothing(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    async with serve(make_config(redis_url, EMITTING.format(target="child"))) as service:
        await post_accepted(http, service, "work/1", {"key": "k", "fail": "broken"})

        await wait_for(lambda: processed(service, "work", "dead") == 1)
        assert await redis.xlen(keys.stream("child")) == 0
        assert await redis.xlen(keys.dead_letters("work")) == 1
