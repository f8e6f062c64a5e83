"""The visitor timeline: one row per notable doorbell event (a ring, a motion or sound
detection, a stored clip with its link, a device gone offline or back), kept in a lake so the
owner's app can ask what happened at the door, newest first.

The doorbell actors given a `timeline` option (the class, `doorbell.timeline` in config.yaml;
without it they keep no timeline) emit one entry each to it (`emit`), in one shape whatever
its kind: `{"device_id", "kind", "at" (Unix s), "details" (a JSON object),
"clip_url" (or None), "event_id"}`. `TimelineArchiver` writes each batch of them to the lake
at `<lake>/events`, placed by `at`, before the batch is acknowledged; an entry of the wrong
shape fails alone. A batch run again (a crash after the write, a retry) first looks in the
lake for the entries it holds, so each event is on the timeline once.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from actors.api import Actor, Compactor, Lake, PermanentFailure, partition_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.api import Context, Envelope

TIMELINE = "doorbell.timeline"  # the class the entries go to
MAX_DETAILS_BYTES = 4096  # a timeline row is a line on a screen, not a document
SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),  # the event it tells of
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # ring, motion, sound, video, ...
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),  # `at`
        pa.field("details", pa.string(), nullable=False),  # a JSON object, as text
        pa.field("clip_url", pa.string()),
    ]
)


def events_lake(root: str, request_timeout_s: float = 30.0) -> Lake:
    """The timeline's lake under a doorbell lake root (a path or s3://bucket/prefix)."""
    return Lake(f"{root.rstrip('/')}/events", SCHEMA, "ts", request_timeout_s=request_timeout_s)


def emit(
    ctx: Context,
    event: Envelope,
    device: str,
    kind: str,
    *,
    to: str | None,
    details: dict[str, Any] | None = None,
    clip_url: str | None = None,
) -> str | None:
    """Put `event` on `device`'s timeline as a `kind` entry: an event of class `to` (the
    actor's `timeline` option, `doorbell.timeline` in config.yaml; None: no timeline), its id
    derived from `event`'s, so a repeated handler emits it once."""
    if to is None:
        return None
    entry = {
        "device_id": device,
        "kind": kind,
        "at": event.source_ts or event.ingest_ts,
        "details": details or {},
        "clip_url": clip_url,
        "event_id": event.id,
    }
    return ctx.emit(to, entry, key=device, parent=event)


def row(event: Envelope) -> dict[str, Any]:
    """The lake row of a timeline entry; PermanentFailure for an entry of the wrong shape."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    texts = {name: payload.get(name) for name in ("device_id", "kind", "event_id")}
    for name, value in texts.items():
        if not isinstance(value, str) or not value:
            raise PermanentFailure(f"a timeline entry without {name} (a non-empty string)")
    at = payload.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not _moment_ok(at):
        raise PermanentFailure(f"at must be a time in Unix seconds, not {at!r:.40}")
    details = payload.get("details") or {}
    if not isinstance(details, dict):
        raise PermanentFailure(f"details must be an object, not {type(details).__name__}")
    text = json.dumps(details, sort_keys=True, allow_nan=False, default=str)
    if len(text) > MAX_DETAILS_BYTES:
        raise PermanentFailure(f"details take {len(text)} bytes, over {MAX_DETAILS_BYTES}")
    clip_url = payload.get("clip_url")
    if clip_url is not None and not isinstance(clip_url, str):
        raise PermanentFailure(f"clip_url must be a string or null, not {clip_url!r:.40}")
    return texts | {
        "ts": datetime.fromtimestamp(float(at), UTC),
        "details": text,
        "clip_url": clip_url or None,
    }


def _moment_ok(at: float) -> bool:
    """A time a timeline can place: finite, after 1970, before the year 3000."""
    try:
        return math.isfinite(at) and 0 <= float(at) < 32503680000
    except OverflowError:
        return False


class TimelineArchiver(Actor):
    """Writes each batch of timeline entries to the lake under `lake` (`<lake>/events`), and
    every `compact_every_s` compacts its closed hours and deletes those older than
    `retention_days` (empty: kept forever)."""

    def __init__(
        self,
        *,
        lake: str,
        retention_days: float | str | None = None,
        compact_every_s: float | str = 300.0,
        compact_after_s: float | str = 3600.0,
        request_timeout_s: float | str = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(lake=lake, retention_days=retention_days, **options)
        self.lake = events_lake(lake, float(request_timeout_s))
        self.compactor = Compactor(
            self.lake, after_s=float(compact_after_s), retention_days=days(retention_days)
        )
        self.compact_every_s = float(compact_every_s)

    async def start(self) -> None:
        self.compactor.start(self.compact_every_s, "switchyard.doorbell")

    async def stop(self) -> None:
        await self.compactor.stop()

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        again = {e.id for e in events if e.attempt or ctx.redelivered(e)}
        rows: list[dict[str, Any]] = []
        for event in events:
            try:
                rows.append(row(event) | {"_id": event.id})
            except PermanentFailure as exc:
                ctx.fail(event, exc)
        if rows:
            await asyncio.to_thread(self._write, rows, again)

    def _write(self, rows: list[dict[str, Any]], again: set[str]) -> None:
        """In a worker thread: the rows, less those of `again` the lake already holds."""
        if again:
            partitions = {partition_of(r["ts"]) for r in rows if r["_id"] in again}
            written = self.lake.event_ids(partitions)
            rows = [r for r in rows if r["_id"] not in again or r["event_id"] not in written]
        if rows:
            self.lake.write([{k: v for k, v in r.items() if k != "_id"} for r in rows])

    async def handle(self, event: Envelope, ctx: Context) -> None:
        await self.handle_batch([event], ctx)


def days(value: float | str | None) -> float | None:
    """Retention in days from the config (text from the environment); empty: forever."""
    return None if value is None or value == "" else float(value)
