"""The Redis key layout, in one place.

Every key of one class carries the class as a hash tag (`sy:{music.like_song}:stream`), so a
class's multi-key operations stay in one Redis Cluster slot.
"""

from __future__ import annotations

PREFIX = "sy"
UNROUTED = "_unrouted"
REJECTED = "_rejected"
INGRESS_REJECTS = (UNROUTED, REJECTED)  # dead-letter streams of events that have no class yet
ENVELOPE_FIELD = b"e"


def stream(cls: str) -> str:
    """The class stream: every accepted event of `cls`, until acknowledged and trimmed."""
    return f"{PREFIX}:{{{cls}}}:stream"


def dead_letters(cls: str) -> str:
    """Events of `cls` that could not be handled, kept with the reason."""
    return f"{PREFIX}:{{{cls}}}:dlq"


def delayed(cls: str) -> str:
    """Events of `cls` waiting for a time (retry backoff, timed waits): a sorted set by due time."""
    return f"{PREFIX}:{{{cls}}}:delay"


def seen(cls: str) -> str:
    """Ids of recent de-duplicated arrivals in `cls` (emits, source-supplied ids), by time."""
    return f"{PREFIX}:{{{cls}}}:seen"


def unrouted() -> str:
    """Events no route matched, kept so that a fixed rule can replay them."""
    return dead_letters(UNROUTED)


def rejected() -> str:
    """Raw messages that could not be read as events (bad bytes, not objects, too large)."""
    return dead_letters(REJECTED)


def instances() -> str:
    """Heartbeats of running Switchyard processes (hash: consumer name -> last seen)."""
    return f"{PREFIX}:instances"


def instance(consumer: str) -> str:
    """One running process's status report (JSON, with a short expiry)."""
    return f"{PREFIX}:instance:{consumer}"


def write_probe(consumer: str) -> str:
    """A key one process writes to learn whether Redis takes writes (readiness)."""
    return f"{PREFIX}:probe:{consumer}"
