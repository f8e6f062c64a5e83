"""Retention against a real redis-server: trimming below what the group still needs, the
`max_len` cap, and removal of consumers that left."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from servers import wait_for

from router.config import Config, parse_config
from router.metrics import Metrics
from router.streams import keys
from router.streams.envelope import Envelope, new_event_id
from router.streams.redis import RedisTransport
from router.streams.retention import Retention

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis


pytestmark = pytest.mark.integration

GROUP = "switchyard"
ME = "retention-instance"


def make_config(max_len: str = "") -> Config:
    return parse_config(f"""
lanes: [{{name: high}}]
classes:
  work:
    lane: high
    actor: actors.builtin:Log
    {max_len}
  other:
    lane: high
    actor: actors.builtin:Log
""")


@pytest_asyncio.fixture
async def transport(redis: Redis) -> AsyncIterator[RedisTransport]:
    transport = RedisTransport(redis, GROUP, ME)
    for cls in ("work", "other"):
        await transport.ensure_group(cls)
    yield transport


def sample(metrics: Metrics, name: str, cls: str) -> float:
    return metrics.registry.get_sample_value(name, {"class": cls}) or 0.0


async def append(redis: Redis, cls: str, count: int) -> list[bytes]:
    ids = []
    for n in range(count):
        envelope = Envelope(id=new_event_id(), cls=cls, lane="high", payload={"n": n})
        entry_id: Any = await redis.xadd(keys.stream(cls), {keys.ENVELOPE_FIELD: envelope.encode()})
        ids.append(bytes(entry_id))
    return ids


async def read(redis: Redis, cls: str, consumer: str, count: int) -> list[bytes]:
    reply: Any = await redis.xreadgroup(GROUP, consumer, {keys.stream(cls): ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]] if reply else []


async def stream_ids(redis: Redis, cls: str) -> list[bytes]:
    entries: Any = await redis.xrange(keys.stream(cls))
    return [entry_id for entry_id, _ in entries]


async def test_a_sweep_trims_acknowledged_entries_below_the_oldest_pending_one(
    redis: Redis, transport: RedisTransport
) -> None:
    metrics = Metrics(CollectorRegistry())
    ids = await append(redis, "work", 10)
    delivered = await read(redis, "work", "c1", 7)
    # acked: 0-3 and 5; pending: 4 and 6; never delivered: 7-9
    await redis.xack(keys.stream("work"), GROUP, *delivered[:4], delivered[5])

    await Retention(make_config(), transport, metrics).sweep()

    assert await stream_ids(redis, "work") == ids[4:]  # 5 is acked, but after a pending one
    assert sample(metrics, "switchyard_stream_trimmed_total", "work") == 4
    assert sample(metrics, "switchyard_events_trimmed_unprocessed_total", "work") == 0
    summary: Any = await redis.xpending(keys.stream("work"), GROUP)
    assert summary["pending"] == 2


async def test_with_nothing_pending_a_sweep_keeps_only_what_was_never_delivered(
    redis: Redis, transport: RedisTransport
) -> None:
    metrics = Metrics(CollectorRegistry())
    ids = await append(redis, "work", 6)
    delivered = await read(redis, "work", "c1", 4)
    await redis.xack(keys.stream("work"), GROUP, *delivered)
    retention = Retention(make_config(), transport, metrics)

    await retention.sweep()
    await retention.sweep()  # idempotent

    assert await stream_ids(redis, "work") == ids[4:]
    assert sample(metrics, "switchyard_stream_trimmed_total", "work") == 4


async def test_a_second_group_that_is_behind_keeps_what_it_still_needs(
    redis: Redis, transport: RedisTransport
) -> None:
    ids = await append(redis, "work", 5)
    await redis.xgroup_create(keys.stream("work"), "analytics", id="0")
    await redis.xack(keys.stream("work"), GROUP, *await read(redis, "work", "c1", 5))
    reply: Any = await redis.xreadgroup("analytics", "a1", {keys.stream("work"): ">"}, count=2)
    await redis.xack(keys.stream("work"), "analytics", *(i for i, _ in reply[0][1]))

    await Retention(make_config(), transport, Metrics(CollectorRegistry())).sweep()

    assert await stream_ids(redis, "work") == ids[2:]


async def test_max_len_cuts_unfinished_entries_and_counts_them(
    redis: Redis, transport: RedisTransport
) -> None:
    metrics = Metrics(CollectorRegistry())
    ids = await append(redis, "work", 10)
    await read(redis, "work", "c1", 3)  # pending, unfinished
    config = make_config(max_len="max_len: 4")

    await Retention(config, transport, metrics).sweep()

    assert await stream_ids(redis, "work") == ids[6:]
    assert sample(metrics, "switchyard_events_trimmed_unprocessed_total", "work") == 6
    assert sample(metrics, "switchyard_stream_trimmed_total", "work") == 6


async def test_max_len_counts_as_unprocessed_only_what_the_floor_did_not_already_remove(
    redis: Redis, transport: RedisTransport
) -> None:
    metrics = Metrics(CollectorRegistry())
    ids = await append(redis, "work", 10)
    await redis.xack(keys.stream("work"), GROUP, *await read(redis, "work", "c1", 5))

    await Retention(make_config(max_len="max_len: 3"), transport, metrics).sweep()

    assert await stream_ids(redis, "work") == ids[7:]
    assert sample(metrics, "switchyard_stream_trimmed_total", "work") == 7
    assert sample(metrics, "switchyard_events_trimmed_unprocessed_total", "work") == 2


async def test_stale_consumers_are_removed_but_ones_holding_entries_and_this_instance_stay(
    redis: Redis, transport: RedisTransport
) -> None:
    await append(redis, "work", 3)
    await redis.xack(keys.stream("work"), GROUP, *await read(redis, "work", "gone", 1))
    await read(redis, "work", "holding", 1)  # never acknowledged
    await read(redis, "work", ME, 1)
    await redis.xack(keys.stream("work"), GROUP, *(await stream_ids(redis, "work"))[2:])

    async def consumers() -> dict[str, dict[str, int]]:
        found: Any = await redis.xinfo_consumers(keys.stream("work"), GROUP)
        return {
            c["name"].decode(): {"idle": int(c["idle"]), "pending": int(c["pending"])}
            for c in found
        }

    async def all_idle() -> bool:
        return all(c["idle"] > 200 for c in (await consumers()).values())

    await wait_for(all_idle, timeout=5)
    await append(redis, "work", 1)
    fresh = await read(redis, "work", "fresh", 1)  # idle for a moment only, nothing pending
    await redis.xack(keys.stream("work"), GROUP, *fresh)
    retention = Retention(make_config(), transport, Metrics(CollectorRegistry()))

    removed = await retention.remove_stale_consumers("work", idle_ms=200)

    assert removed == 1
    left = await consumers()
    assert sorted(left) == ["fresh", "holding", ME]
    assert left["holding"]["pending"] == 1
    assert await retention.remove_stale_consumers("work", idle_ms=200) == 0


async def test_a_sweep_goes_on_past_a_class_whose_stream_is_gone(
    redis: Redis, transport: RedisTransport
) -> None:
    metrics = Metrics(CollectorRegistry())
    await redis.delete(keys.stream("work"))  # say an operator dropped it
    ids = await append(redis, "other", 3)
    await redis.xack(keys.stream("other"), GROUP, *await read(redis, "other", "c1", 3))

    await Retention(make_config(), transport, metrics).sweep()

    assert await stream_ids(redis, "other") == []
    assert sample(metrics, "switchyard_stream_trimmed_total", "other") == len(ids)
