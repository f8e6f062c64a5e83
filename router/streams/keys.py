"""The Redis key layout, in one place.

Every key of one class partition carries the partition's tag as a hash tag, so the
partition's multi-key operations (scripts, the settle transaction) stay in one Redis Cluster
slot, and partitions spread over the cluster's nodes. A class of one partition (the default)
is tagged by its name alone, `sy:{music.like_song}:stream`; partition 3 of 8 of a class is
`sy:{music.like_song#3}:stream`. Keys shared by every instance (heartbeats, reports, the
partition counts) share the `{_instances}` tag, so no command on them spans slots.
"""

from __future__ import annotations

import zlib

PREFIX = "sy"
UNROUTED = "_unrouted"
REJECTED = "_rejected"
INGRESS_REJECTS = (UNROUTED, REJECTED)  # dead-letter streams of events that have no class yet
ENVELOPE_FIELD = b"e"
SHARED = "_instances"  # the hash tag of the keys every instance shares
SERVICES = "_services"  # the member group of every service (not lane worker): shared upkeep


# --- partitions ---


def tags(cls: str, partitions: int) -> list[str]:
    """The tags of a class's partitions; one partition is tagged by the class name alone."""
    if partitions == 1:
        return [cls]
    return [f"{cls}#{index}" for index in range(partitions)]


def tag_for(cls: str, key: str, partitions: int) -> str:
    """The tag of the partition holding events of `cls` with this ordering key: a stable hash
    (CRC-32), the same in every process and every release."""
    if partitions == 1:
        return cls
    return f"{cls}#{zlib.crc32(key.encode()) % partitions}"


def class_of(tag: str) -> str:
    """The class a partition tag belongs to."""
    return tag.partition("#")[0]


def tag_of(key: str) -> str:
    """The hash tag of one of these keys: `sy:{music.like_song#3}:dlq` -> `music.like_song#3`."""
    return key.partition("{")[2].partition("}")[0]


# --- one partition's keys (a class of one partition: one class's keys) ---


def stream(tag: str) -> str:
    """The partition's stream: every accepted event, until acknowledged and trimmed."""
    return f"{PREFIX}:{{{tag}}}:stream"


def dead_letters(tag: str) -> str:
    """Events of the partition that could not be handled, kept with the reason."""
    return f"{PREFIX}:{{{tag}}}:dlq"


def delayed(tag: str) -> str:
    """Events waiting for a time (retry backoff, timed waits): a sorted set by due time."""
    return f"{PREFIX}:{{{tag}}}:delay"


def seen(tag: str) -> str:
    """Ids of recent de-duplicated arrivals (emits, source-supplied ids), by time."""
    return f"{PREFIX}:{{{tag}}}:seen"


def owner(tag: str) -> str:
    """The lease of an ordered (stream-mode) partition: its one consumer, with a fencing token."""
    return f"{PREFIX}:{{{tag}}}:owner"


def unrouted() -> str:
    """Events no route matched, kept so that a fixed rule can replay them."""
    return dead_letters(UNROUTED)


def rejected() -> str:
    """Raw messages that could not be read as events (bad bytes, not objects, too large)."""
    return dead_letters(REJECTED)


# --- shared by every instance ---


def instances() -> str:
    """Heartbeats of running Switchyard processes: a sorted set, consumer -> last seen (ms)."""
    return f"{PREFIX}:{{{SHARED}}}"


def lane_members() -> str:
    """Heartbeats of the processes running each lane's pools, who may own its partitions: a
    sorted set of `<lane> <consumer>` by last beat (ms, Redis's clock)."""
    return f"{PREFIX}:{{{SHARED}}}:members"


def instance(consumer: str) -> str:
    """One running process's status report (JSON, with a short expiry)."""
    return f"{PREFIX}:{{{SHARED}}}:report:{consumer}"


def write_probe(consumer: str) -> str:
    """A key one process writes to learn whether Redis takes writes (readiness)."""
    return f"{PREFIX}:{{{SHARED}}}:probe:{consumer}"


def partition_stats() -> str:
    """A hash, partition tag -> its latest figures (JSON), shared by the service keeping it."""
    return f"{PREFIX}:{{{SHARED}}}:stats"


def partition_counts() -> str:
    """A hash, class -> the partition count its keys were made with."""
    return f"{PREFIX}:{{{SHARED}}}:partitions"


# --- a workload's registry, shared by every instance ---


def workload_of(cls: str) -> str:
    """The workload a class belongs to: `doorbell.button_press` -> `doorbell`."""
    return cls.partition(".")[0]


def record(workload: str, name: str) -> str:
    """One of a workload's records (a patient's visit, say): a hash of fields, kept for a
    while after its last update. A workload's records share a hash tag, so one pipeline
    or script can read many of them."""
    return f"{PREFIX}:{{_records:{workload}}}:{name}"


def devices(workload: str) -> str:
    """A workload's device registry: a hash, device id -> the device's settings (JSON)."""
    return f"{PREFIX}:{{_devices:{workload}}}"


def last_seen(workload: str) -> str:
    """A workload's reporting devices: a sorted set, device id -> when it is due to be
    offline (its last report plus its allowance of silent intervals, Unix seconds)."""
    return f"{PREFIX}:{{_fleet:{workload}}}:due"


def offline(workload: str) -> str:
    """A workload's devices now offline: a hash, device id -> when it was due (Unix s)."""
    return f"{PREFIX}:{{_fleet:{workload}}}:offline"
