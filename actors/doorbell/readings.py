"""Doorbell readings rolled up per minute: what a batch of temperature and light readings adds
to each (device, kind, minute), kept in a lake at `<lake>/readings`.

A batch writes partial rollups: count, sum, min, max, and the last value with its time. Two
batches of the same minute each write a row; a reader combines them (`analytics`): counts and
sums add up, min and max of the mins and maxes, the mean is sum / count, the last is the one
with the latest time. Each row keeps the ids of the readings it counts, so a batch run again
(a crash after the write, a retry) counts only the readings the lake does not hold yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from actors.api import Lake, partition_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # temperature, light
        pa.field("minute", pa.timestamp("us", tz="UTC"), nullable=False),  # its start
        pa.field("count", pa.int64(), nullable=False),
        pa.field("sum", pa.float64(), nullable=False),
        pa.field("min", pa.float64(), nullable=False),
        pa.field("max", pa.float64(), nullable=False),
        pa.field("last", pa.float64(), nullable=False),
        pa.field("last_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_ids", pa.list_(pa.string()), nullable=False),  # the readings counted
    ]
)


@dataclass(frozen=True, slots=True)
class Reading:
    """One valid reading: whose, what, when (Unix s), how much, and its event's id."""

    device_id: str
    kind: str
    at: float
    value: float
    event_id: str


def readings_lake(root: str, request_timeout_s: float = 30.0) -> Lake:
    """The readings' lake under a doorbell lake root (a path or s3://bucket/prefix)."""
    url = f"{root.rstrip('/')}/readings"
    return Lake(url, SCHEMA, "minute", request_timeout_s=request_timeout_s)


def rollups(readings: Iterable[Reading]) -> list[dict[str, Any]]:
    """One partial rollup row per (device, kind, minute) of `readings`."""
    groups: dict[tuple[str, str, int], list[Reading]] = {}
    for reading in readings:
        minute = int(reading.at // 60) * 60
        groups.setdefault((reading.device_id, reading.kind, minute), []).append(reading)
    rows = []
    for (device, kind, minute), group in sorted(groups.items()):
        values = [r.value for r in group]
        last = max(group, key=lambda r: r.at)
        rows.append({
            "device_id": device, "kind": kind, "minute": datetime.fromtimestamp(minute, UTC),
            "count": len(values), "sum": sum(values), "min": min(values), "max": max(values),
            "last": last.value, "last_at": datetime.fromtimestamp(last.at, UTC),
            "event_ids": [r.event_id for r in group],
        })  # fmt: skip
    return rows


def write(lake: Lake, readings: Sequence[Reading], again: set[str]) -> int:
    """Write `readings`' rollups (blocking: run it in a thread), less the readings of
    `again` (events another run may have counted) that the lake already holds; returns the
    rows written."""
    if again:
        minutes = {partition_of(_at(r.at)) for r in readings if r.event_id in again}
        counted = {i for ids in lake.column(minutes, "event_ids") for i in ids or ()} & again
        readings = [r for r in readings if r.event_id not in counted]
    rows = rollups(readings)
    if rows:
        lake.write(rows)
    return len(rows)


def _at(at: float) -> datetime:
    return datetime.fromtimestamp(int(at // 60) * 60, UTC)
