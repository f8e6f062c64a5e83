"""Offline and online announcements: events on `<workload>/<device>/offline|online`, routed
like any event (the default config sends them to `doorbell.health`, whose actor alerts the
owner).

Each carries an `event_id` made from the device and the moment it concerns, so an
announcement sent twice (retried after Redis was away) is one event. One that cannot be sent
now waits in a bounded list and goes with the next pass.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = structlog.get_logger("switchyard.fleet")

WAITING = 200_000  # a whole fleet's announcements, bounded
CHUNK = 1_000


class Announcer:
    """Sends announcements through `send(messages)` (the service's ingest, `CHUNK` topics and
    JSON bodies in one round trip: a whole fleet going quiet at once is 100,000 of them)."""

    def __init__(self, send: Callable[[list[tuple[str, bytes]]], Awaitable[object]]) -> None:
        self.send = send
        self.waiting: deque[tuple[str, dict[str, Any]]] = deque(maxlen=WAITING)

    def add(self, workload: str, device: str, state: str, at: float, **details: Any) -> None:
        payload = {
            "event_id": f"{state}-{device}-{at:.3f}",
            "device_id": device,
            "state": state,
            "at": at,
            **details,
        }
        self.waiting.append((f"{workload}/{device}/{state}", payload))

    async def flush(self) -> int:
        """Send what waits, oldest first, a chunk at a time; stop at the first failure (the
        rest wait)."""
        sent = 0
        while self.waiting:
            chunk = [self.waiting[i] for i in range(min(CHUNK, len(self.waiting)))]
            try:
                await self.send([(topic, json.dumps(payload).encode()) for topic, payload in chunk])
            except Exception as exc:  # Redis away, shedding: the next pass tries again
                log.warning("fleet announcements not sent yet", waiting=len(self.waiting),
                            error=repr(exc))  # fmt: skip
                break
            for _ in chunk:
                self.waiting.popleft()
            sent += len(chunk)
        return sent
