"""Connected-doorbell actors: instant alerts, quick detections, batched readings, stored video.

A value of the wrong kind (a confidence that is not a number, a clip without an id) can never
succeed: it is a `PermanentFailure`, kept as a dead letter with the reason, not retried.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from actors.api import Actor, Alert, Context, PermanentFailure
from actors.doorbell.clips import ClipIndex as ClipIndex

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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PermanentFailure(f"{name} must be a finite number, not {value!r:.40}")
    return float(value)


class OwnerAlert(Actor):
    """A button press: the owner told at once (`ctx.notify`: signed webhook, MQTT back-channel)
    before the event is acknowledged, so the class's SLA is measured to delivery; then kept
    in `stream`, the device's timeline of rings.

    A receiver that is down makes the handler fail and the ring is retried with the class's
    backoff; a device nobody registered, or a receiver that refuses the alert, sends it to
    the dead letters with the reason, to replay once fixed.
    """

    def __init__(self, *, stream: str = "doorbell:alerts", **options: Any) -> None:
        super().__init__(stream=stream, **options)
        self.stream = stream

    async def handle(self, event: Envelope, ctx: Context) -> None:
        device = _device(event)
        details = _details(event, "priority")
        await ctx.notify(Alert("ring", device, event.id, event.ingest_ts, details))
        ctx.append(self.stream, {"event_id": event.id, "device_id": device, "kind": "ring"})
        ctx.log.info("doorbell rang, owner alerted", event_id=event.id, device_id=device)


class Detection(Actor):
    """Motion or sound: kept in `stream` for quick review; one at least as confident as the
    device's threshold (its `motion_threshold` / `sound_threshold`, else `alert_confidence`)
    alerts the owner as a `motion` or `sound` alert, never as a ring. A device nobody
    registered has no owner to alert: its detections are only kept."""

    def __init__(
        self, *, stream: str = "doorbell:detections", alert_confidence: float = 0.9, **options: Any
    ) -> None:
        super().__init__(stream=stream, alert_confidence=alert_confidence, **options)
        self.stream = stream
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
        if registered is not None and confidence >= threshold:
            details = {"confidence": confidence, "threshold": threshold}
            await ctx.notify(Alert(kind, device, event.id, event.ingest_ts, details))
        ctx.append(
            self.stream,
            {"event_id": event.id, "device_id": device, "kind": kind, "confidence": confidence},
        )


class ReadingSummary(Actor):
    """Temperature and light readings, summarised per device and kind for each batch.

    A reading without a numeric `value` fails alone; the batch's summary leaves it out.
    """

    def __init__(self, *, stream: str = "doorbell:readings", **options: Any) -> None:
        super().__init__(stream=stream, **options)
        self.stream = stream

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        groups: dict[tuple[str, str], list[float]] = {}
        for event in events:
            try:
                value = _number(event, "value")
            except PermanentFailure as exc:
                ctx.fail(event, exc)
                continue
            kind = _event_name(event)
            groups.setdefault((_device(event), kind), []).append(value)
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

    def __init__(self, *, stream: str = "doorbell:videos", **options: Any) -> None:
        super().__init__(stream=stream, **options)
        self.stream = stream

    async def handle(self, event: Envelope, ctx: Context) -> None:
        clip = event.payload.get("clip_id")
        if not isinstance(clip, str) or not clip:
            raise PermanentFailure("video_upload without a clip_id (a non-empty string)")
        url = event.payload.get("url", "")
        if not isinstance(url, str):
            raise PermanentFailure(f"url must be a string, not {type(url).__name__}")
        ctx.append(
            self.stream,
            {
                "event_id": event.id,
                "device_id": _device(event),
                "clip_id": clip,
                "duration_s": _number(event, "duration_s", 0.0),
                "url": url,
            },
        )
