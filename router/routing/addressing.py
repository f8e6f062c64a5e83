"""Addressing: an event's topic and payload made into an envelope for its class.

Routing picks the class and key; this adds what every envelope carries: its id (the source's
own `event_id` when it gave one), lane, source, and the source's own timestamp. Ingress uses
it for what arrives, and actors' contexts for what they emit, so both behave alike.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from router.streams import keys
from router.streams.envelope import Envelope, new_event_id

if TYPE_CHECKING:
    from router.clock import Clock
    from router.config import Config
    from router.routing.rules import Router, TopicRoutes

SOURCE_ID_FIELD = "event_id"
SOURCE_TS_FIELD = "timestamp"
MAX_SOURCE_ID = 128


class Addresser:
    """Builds envelopes for known classes, or for topics through the routes."""

    def __init__(self, config: Config, router: Router, clock: Clock) -> None:
        self.clock = clock
        self.replace(config, router)

    def replace(self, config: Config, router: Router) -> None:
        """Address by a reloaded config and its routes from the next event on."""
        self.config = config
        self.router = router
        self._lanes = {name: cls.lane for name, cls in config.classes.items()}
        self._partitions = {name: cls.partitions for name, cls in config.classes.items()}

    def partition(self, envelope: Envelope) -> str:
        """The tag of the partition an event goes to: by its key, or by its id when it has
        none (events without a key have no order to keep, so they spread)."""
        partitions = self._partitions[envelope.cls]
        if partitions == 1:
            return envelope.cls
        return keys.tag_for(envelope.cls, envelope.key or envelope.id, partitions)

    def for_class(
        self,
        cls: str,
        payload: Any,
        *,
        key: str | None,
        source: str,
        topic: str = "",
        event_id: str | None = None,
        source_ts: float | None = None,
        ingest_ts: float | None = None,
    ) -> Envelope:
        """An envelope for a known class, ingested now or at `ingest_ts`."""
        return Envelope(
            id=event_id or new_event_id(),
            cls=cls,
            lane=self._lanes[cls],
            payload=payload,
            key=key,
            source=source,
            topic=topic,
            source_ts=source_ts,
            ingest_ts=self.clock.wall() if ingest_ts is None else ingest_ts,
        )

    def for_topic(
        self,
        topic: str,
        payload: Any,
        *,
        source: str,
        event_id: str | None = None,
        ingest_ts: float | None = None,
    ) -> Envelope | None:
        """An envelope for an event on `topic`, or None when no route matches it."""
        routes = self.router.for_topic(topic)
        stamp = self.clock.wall() if ingest_ts is None else ingest_ts
        return self.for_routes(routes, payload, source, event_id, stamp)

    def for_routes(
        self,
        routes: TopicRoutes,
        payload: Any,
        source: str,
        event_id: str | None,
        ingest_ts: float,
    ) -> Envelope | None:
        """`for_topic` for one of a batch of events on one topic, whose routes the batch
        looked up once: the ingest path, built for the cost of one event."""
        routed = routes.route(payload, self.router.classes)
        if routed is None:
            return None
        cls = routed.cls
        return Envelope(
            event_id or new_event_id(), cls, self._lanes[cls], payload, routed.key, source,
            routes.topic, source_timestamp(payload), ingest_ts,
        )  # fmt: skip


def source_id(payload: dict[str, Any]) -> str | None:
    """The source's own id for the event: kept as its id, and de-duplicated on arrival."""
    value = payload.get(SOURCE_ID_FIELD)
    if isinstance(value, str) and 0 < len(value) <= MAX_SOURCE_ID:
        return value
    return None


def source_timestamp(payload: Any) -> float | None:
    """The source's own timestamp as Unix seconds, when it stamped the event legibly."""
    if not isinstance(payload, dict):
        return None
    value = payload.get(SOURCE_TS_FIELD)
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value) / 1000 if value > 1e11 else float(value)
            return seconds if math.isfinite(seconds) else None
        if isinstance(value, str):
            return _iso_seconds(value)
    except (ValueError, OverflowError, OSError):
        return None  # illegible or out of range: the event is kept, unstamped
    return None


@functools.lru_cache(maxsize=1024)
def _iso_seconds(text: str) -> float:
    """Unix seconds of an ISO 8601 time, UTC unless it says otherwise. Cached: events of a
    burst carry the same second."""
    stamp = datetime.fromisoformat(text)
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
