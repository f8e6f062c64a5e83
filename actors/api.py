"""The actor API: everything a domain actor is written against, and nothing else.

Domain actors import from here alone: the base class, the context a handler is given, the
event envelope, the failure that skips retries, the alert a handler has delivered to a
device's owner (`ctx.notify`) and the registered `Device`; and, for a workload that answers
questions over what it stored, the analytics types (`Query`, `Answer`, `Chart`, `QueryError`;
for answers over live state, `Lookups`, `DeadLetter` and `Gauge`);
and, for one that keeps files or clips, the object store (`ObjectStore`, `ObjectInfo`); and,
for one that keeps a durable log, the lake (`Lake`, its `Compactor` and their parts).
"""

from __future__ import annotations

from router.errors import PermanentFailure
from router.notify.alert import Alert
from router.notify.device import Device
from router.ops.analytics import Answer, Chart, Gauge, Lookups, Query, QueryError
from router.runtime.actor import Actor, Context, StreamFields
from router.storage.compaction import Compactor
from router.storage.compaction import Pass as CompactionPass
from router.storage.compaction import closed as partition_closed
from router.storage.lake import Lake, partition_of, partitions_between, replaced_by
from router.storage.lake import Listing as LakeListing
from router.storage.lake import Segment as LakeSegment
from router.storage.objects import ObjectInfo, ObjectStore
from router.streams.deadletters import DeadLetter
from router.streams.envelope import Envelope

__all__ = [
    "Actor",
    "Alert",
    "Answer",
    "Chart",
    "CompactionPass",
    "Compactor",
    "Context",
    "DeadLetter",
    "Device",
    "Envelope",
    "Gauge",
    "Lake",
    "LakeListing",
    "LakeSegment",
    "Lookups",
    "ObjectInfo",
    "ObjectStore",
    "PermanentFailure",
    "Query",
    "QueryError",
    "StreamFields",
    "partition_closed",
    "partition_of",
    "partitions_between",
    "replaced_by",
]  # fmt: skip
