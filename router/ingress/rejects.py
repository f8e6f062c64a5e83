"""What is kept aside at ingress, and how: unrouted events, events that cannot be taken, and
messages that are not events at all, each with what a person needs to judge it.

Every record is bounded: a kept message's raw bytes are cut at `max_event_bytes`, and a kept
event is its own value (when it can be stored) or a short excerpt. Keeping a message never
costs more than taking one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from router.errors import EventTooLarge, InvalidEvent, kind_of

if TYPE_CHECKING:
    from router.clock import Clock
    from router.streams.transport import Fields

ERROR_CHARS = 2000  # of an error message or an excerpt kept with a rejected event


class Rejects:
    """Builds the records of the `_unrouted` and `_rejected` dead-letter streams."""

    def __init__(self, clock: Clock, max_event_bytes: int) -> None:
        self.clock = clock
        self.max_event_bytes = max_event_bytes

    def unrouted(self, event_id: str, topic: str, source: str, packed: bytes) -> Fields:
        return {
            "id": event_id,
            "reason": "unrouted",
            "topic": topic,
            "source": source,
            "ingest_ts": self.clock.wall(),
            "payload": packed,
        }

    def element(
        self, topic: str, source: str, payload: Any, index: int, exc: InvalidEvent | EventTooLarge
    ) -> Fields:
        """One event of a message kept aside: as msgpack when it can be (so it can be
        replayed once the cause is fixed), else a short excerpt of it."""
        fields: dict[str, str | bytes | int | float] = {
            "reason": kind_of(exc),
            "error": str(exc)[:ERROR_CHARS],
            "topic": topic,
            "source": source,
            "index": index,
            "ingest_ts": self.clock.wall(),
        }
        try:
            packed = msgpack.packb(payload, use_bin_type=True)
        except (OverflowError, TypeError, ValueError):
            packed = None
        if packed is not None and len(packed) <= self.max_event_bytes:
            fields["payload"] = packed
        else:
            fields["excerpt"] = repr(payload)[:ERROR_CHARS]
        return fields

    def raw(self, topic: str, source: str, raw: bytes, reason: str, error: str) -> Fields:
        """A whole message kept aside; its raw bytes are cut at `max_event_bytes`, so keeping
        a message never costs more than taking one."""
        fields: dict[str, str | bytes | int | float] = {
            "reason": reason,
            "error": error[:ERROR_CHARS],
            "topic": topic,
            "source": source,
            "ingest_ts": self.clock.wall(),
            "raw": raw[: self.max_event_bytes],
        }
        if len(raw) > self.max_event_bytes:
            fields["raw_bytes"] = len(raw)  # the size it had: `raw` holds its start
        return fields
