"""Records: what a workload keeps about the things it follows (a patient's visit), as small
Redis hashes updated field by field.

A handler updates a record with its outputs (`ctx.update`), so the update is written before
its event is acknowledged, in the same round trip as its emits. Setting fields is
idempotent: a handler run twice (a crash before the ack) writes the same fields again. Each
update renews the record's lifetime, so records of finished things go away by themselves
and a workload's records stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from router.streams.client import RedisClient

MAX_FIELDS = 256  # per update: a record is a line about a thing, not a document store
DEFAULT_KEEP_S = 7 * 86400

# KEYS[1]: the record; ARGV[1]: its lifetime in ms; then field, value pairs.
UPDATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class RecordUpdate:
    """Fields to set on the record `key`, which is then kept `keep_ms` from now."""

    key: str
    fields: Mapping[str, str | bytes | int | float]
    keep_ms: int

    def script_args(self) -> list[Any]:
        """UPDATE's keys and arguments: one key, the lifetime, then field-value pairs."""
        args: list[Any] = [1, self.key, self.keep_ms]
        for name, value in self.fields.items():
            args += [name, value]
        return args


def update(
    workload: str, name: str, fields: Mapping[str, str | bytes | int | float], keep_s: float
) -> RecordUpdate:
    """An update of the record `name` of `workload`; ValueError for one Redis should not take."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a record's name must be a non-empty str, not {name!r:.40}")
    if not 0 < keep_s <= 366 * 86400:
        raise ValueError(f"keep_s must be more than 0 and at most a year, not {keep_s!r}")
    if not 0 < len(fields) <= MAX_FIELDS:
        raise ValueError(f"an update sets 1 to {MAX_FIELDS} fields, not {len(fields)}")
    return RecordUpdate(keys.record(workload, name), fields, int(keep_s * 1000))


class Records:
    """The records of one workload, read back."""

    def __init__(self, redis: RedisClient, workload: str) -> None:
        self.redis = redis
        self.workload = workload

    async def get(self, name: str) -> dict[str, str]:
        """The record's fields (empty: no such record, or it expired)."""
        return _text(await self.redis.hgetall(keys.record(self.workload, name)))

    async def many(self, names: Sequence[str]) -> list[dict[str, str]]:
        """Several records in one round trip, in the order asked."""
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.record(self.workload, name))
            replies = await pipe.execute()
        return [_text(reply) for reply in replies]


def _text(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {_decoded(name): _decoded(value) for name, value in fields.items()}


def _decoded(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
