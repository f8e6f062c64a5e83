"""Connected-doorbell actors: instant alerts, quick detections, batched readings, stored video.

Each ring, detection and clip is also put on the device's timeline (`timeline`), and the
readings are rolled up per minute in a lake (`readings`): both are answered by `analytics`.

A value of the wrong kind (a confidence that is not a number, a clip without an id) can never
succeed: it is a `PermanentFailure`, kept as a dead letter with the reason, not retried.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from actors.api import Actor, Alert, Compactor, Context, PermanentFailure
from actors.doorbell import readings, timeline
from actors.doorbell.clips import ClipIndex as ClipIndex
from actors.doorbell.health import FleetAlert as FleetAlert
from actors.doorbell.timeline import TimelineArchiver as TimelineArchiver

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.api import Envelope


def _device(event: Envelope) -> str:
    return event.key or str(event.payload.get("device_id", "unknown"))


DETECTIONS = {"motion_detected": "motion", "sound_detected": "sound"}


def _event_name(event: Envelope) -> str:
    """What the device reported: the topic's last level (`doorbell/<d>/motion_detected`), or
    the payload's `event` on the one-topic shape (`doorbell/<d>/events`)."""
    last = event.topic.rsplit("/", 1)[-1]
    if last == "events":
        named = event.payload.get("event") if isinstance(event.payload, dict) else None
        return named if isinstance(named, str) else ""
    return last


def _details(event: Envelope, *names: str) -> dict[str, Any]:
    """The payload's text or number fields among `names`, for the owner's alert."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    return {
        name: payload[name]
        for name in names
        if isinstance(payload.get(name), (str, int, float))
        and not isinstance(payload.get(name), bool)
    }


def _number(event: Envelope, name: str, default: float | None = None) -> float:
    """The payload's finite number `name` (not a bool); `default` when it is absent, or a
    PermanentFailure if there is none."""
    value = event.payload.get(name)
    if value is None:
        if default is None:
            raise PermanentFailure(f"{name} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise PermanentFailure(f"{name} must be a finite number, not {value!r:.40}")
    return float(value)


def _finite(value: float) -> bool:
    """Whether `value` is a finite float; an int too large for one (10**400) is not."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class OwnerAlert(Actor):
    """A button press: the owner told at once (`ctx.notify`: signed webhook, MQTT back-channel)
    before the event is acknowledged, so the class's SLA is measured to delivery; then kept
    in `stream`, the device's timeline of rings.

    A receiver that is down makes the handler fail and the ring is retried with the class's
    backoff; a device nobody registered, or a receiver that refuses the alert, sends it to
    the dead letters with the reason, to replay once fixed.
    """

    def __init__(
        self, *, stream: str = "doorbell:alerts", timeline: str | None = None, **options: Any
    ) -> None:
        super().__init__(stream=stream, timeline=timeline, **options)
        self.stream = stream
        self.timeline = timeline

    async def handle(self, event: Envelope, ctx: Context) -> None:
        device = _device(event)
        details = _details(event, "priority")
        await ctx.notify(Alert("ring", device, event.id, event.ingest_ts, details))
        ctx.append(self.stream, {"event_id": event.id, "device_id": device, "kind": "ring"})
        timeline.emit(ctx, event, device, "ring", to=self.timeline, details=details)
        ctx.log.info("doorbell rang, owner alerted", event_id=event.id, device_id=device)


class Detection(Actor):
    """Motion or sound: kept in `stream` for quick review; one at least as confident as the
    device's threshold (its `motion_threshold` / `sound_threshold`, else `alert_confidence`)
    alerts the owner as a `motion` or `sound` alert, never as a ring. A device nobody
    registered has no owner to alert: its detections are only kept."""

    def __init__(
        self,
        *,
        stream: str = "doorbell:detections",
        alert_confidence: float = 0.9,
        timeline: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            stream=stream, alert_confidence=alert_confidence, timeline=timeline, **options
        )
        self.stream = stream
        self.timeline = timeline
        self.alert_confidence = float(alert_confidence)

    async def handle(self, event: Envelope, ctx: Context) -> None:
        device = _device(event)
        kind = DETECTIONS.get(_event_name(event))
        if kind is None:
            raise PermanentFailure(f"not a detection: {_event_name(event)!r:.40}")
        confidence = _number(event, "confidence", 0.0)
        if not 0.0 <= confidence <= 1.0:
            raise PermanentFailure(f"confidence must be between 0 and 1, not {confidence:g}")
        registered = await ctx.device(device)
        threshold = (
            registered.threshold(kind, self.alert_confidence)
            if registered is not None
            else self.alert_confidence
        )
        alerted = registered is not None and confidence >= threshold
        details = {"confidence": confidence, "threshold": threshold}
        if alerted:
            await ctx.notify(Alert(kind, device, event.id, event.ingest_ts, details))
        timeline.emit(
            ctx, event, device, kind, to=self.timeline, details=details | {"alerted": alerted}
        )
        ctx.append(
            self.stream,
            {"event_id": event.id, "device_id": device, "kind": kind, "confidence": confidence},
        )


class ReadingSummary(Actor):
    """Temperature and light readings, summarised per device and kind for each batch in
    `stream`, and, given a doorbell `lake` root, rolled up per minute in `<lake>/readings`
    (`readings`) before the batch is acknowledged; minutes older than `retention_days` are
    deleted by the compaction pass every `compact_every_s`.

    A reading without a finite numeric `value` (within ±`MAX_READING`, so sums stay finite)
    fails alone; the batch's summary leaves it out.
    """

    MAX_READING = 1e12  # no temperature or light level comes near: a broken sensor, or worse

    def __init__(
        self,
        *,
        stream: str = "doorbell:readings",
        lake: str | None = None,
        retention_days: float | str | None = 30,
        compact_every_s: float | str = 300.0,
        compact_after_s: float | str = 3600.0,
        **options: Any,
    ) -> None:
        super().__init__(stream=stream, lake=lake, retention_days=retention_days, **options)
        self.stream = stream
        self.compact_every_s = float(compact_every_s)
        self.lake = readings.readings_lake(lake) if lake else None
        self.compactor = (
            Compactor(self.lake, after_s=float(compact_after_s),
                      retention_days=timeline.days(retention_days))
            if self.lake is not None
            else None
        )  # fmt: skip

    def _value(self, event: Envelope) -> float:
        value = _number(event, "value")
        if abs(value) > self.MAX_READING:
            raise PermanentFailure(f"value {value:g} is beyond ±{self.MAX_READING:g}")
        return value

    async def start(self) -> None:
        if self.compactor is not None:
            self.compactor.start(self.compact_every_s, "switchyard.doorbell")

    async def stop(self) -> None:
        if self.compactor is not None:
            await self.compactor.stop()

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        groups: dict[tuple[str, str], list[float]] = {}
        valid: list[readings.Reading] = []
        for event in events:
            try:
                value = self._value(event)
            except PermanentFailure as exc:
                ctx.fail(event, exc)
                continue
            kind = _event_name(event)
            groups.setdefault((_device(event), kind), []).append(value)
            at = event.source_ts or event.ingest_ts
            valid.append(readings.Reading(_device(event), kind, at, value, event.id))
        if self.lake is not None and valid:
            again = {e.id for e in events if e.attempt or ctx.redelivered(e)}
            await asyncio.to_thread(readings.write, self.lake, valid, again)
        for (device, kind), values in groups.items():
            ctx.append(
                self.stream,
                {
                    "device_id": device,
                    "kind": kind,
                    "count": len(values),
                    "min": min(values),
                    "max": max(values),
                    "mean": sum(values) / len(values),
                },
            )


class VideoArchive(Actor):
    """A clip upload: index it for later review. A clip without a `clip_id` cannot be indexed."""

    def __init__(
        self, *, stream: str = "doorbell:videos", timeline: str | None = None, **options: Any
    ) -> None:
        super().__init__(stream=stream, timeline=timeline, **options)
        self.stream = stream
        self.timeline = timeline

    async def handle(self, event: Envelope, ctx: Context) -> None:
        clip = event.payload.get("clip_id")
        if not isinstance(clip, str) or not clip:
            raise PermanentFailure("video_upload without a clip_id (a non-empty string)")
        url = event.payload.get("url", "")
        if not isinstance(url, str):
            raise PermanentFailure(f"url must be a string, not {type(url).__name__}")
        duration = _number(event, "duration_s", 0.0)
        ctx.append(
            self.stream,
            {
                "event_id": event.id,
                "device_id": _device(event),
                "clip_id": clip,
                "duration_s": duration,
                "url": url,
            },
        )
        details = {"clip_id": clip, "duration_s": duration}
        timeline.emit(
            ctx, event, _device(event), "video",
            to=self.timeline, details=details, clip_url=url or None,
        )  # fmt: skip
