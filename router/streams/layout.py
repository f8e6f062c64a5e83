"""The partition counts a class's streams were made with, kept in Redis, and the rule that
guards them: a class's partition count changes only while its streams hold nothing.

An event's partition is its key's hash modulo the count, so a new count would send a key's
events to another stream than its waiting ones: order within the key would break, and the
old streams would be consumed by nobody. Switchyard refuses to start (and `switchyard check`
says why) until the class is drained, rather than migrating behind the operator's back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from router.streams import keys

if TYPE_CHECKING:
    from router.config import Config
    from router.streams.client import RedisClient
    from router.streams.redis import RedisTransport


async def partition_problems(transport: RedisTransport, config: Config) -> dict[str, str]:
    """Per class whose partition count would change while its streams hold events, why."""
    recorded: Any = await transport.redis.hgetall(keys.partition_counts())
    counts = {_text(name): int(count) for name, count in recorded.items()}
    problems = {}
    for name, cls in config.classes.items():
        before = counts.get(name, 1)  # a class made before counts were kept had one partition
        if before == cls.partitions:
            continue
        held = await _held(transport, keys.tags(name, before))
        if held:
            problems[name] = (
                f"partitions changed from {before} to {cls.partitions} while the class's "
                f"streams hold {held} entries; drain it first, or keep partitions: {before}"
            )
    return problems


async def record_partitions(redis: RedisClient, config: Config) -> None:
    """Remember the partition count of every class, as this config makes its keys."""
    counts = {name: cls.partitions for name, cls in config.classes.items()}
    await redis.hset(keys.partition_counts(), mapping=counts)  # type: ignore[arg-type]


async def _held(transport: RedisTransport, tags: list[str]) -> int:
    """Entries not finished in the partitions: undelivered, pending, or delayed."""
    held = sum(s.backlog + s.pending for s in (await transport.stats(tags)).values())
    for tag in tags:
        held += int(await transport.redis.zcard(keys.delayed(tag)))
    return held


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
