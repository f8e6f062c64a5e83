"""Connected-doorbell actors: instant alerts, quick detections, batched readings, stored video.

A value of the wrong kind (a confidence that is not a number, a clip without an id) can never
succeed: it is a `PermanentFailure`, kept as a dead letter with the reason, not retried.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from actors.api import Actor, Context, PermanentFailure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.api import Envelope


def _device(event: Envelope) -> str:
    return event.key or str(event.payload.get("device_id", "unknown"))


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
    """A button press: alert the owner now (option `stream`, read by the notification sender)."""

    def __init__(self, *, stream: str = "doorbell:alerts", **options: Any) -> None:
        super().__init__(stream=stream, **options)
        self.stream = stream

    async def handle(self, event: Envelope, ctx: Context) -> None:
        device = _device(event)
        ctx.append(self.stream, {"event_id": event.id, "device_id": device, "kind": "button_press"})
        ctx.log.info("doorbell pressed, owner alerted", event_id=event.id, device_id=device)


class Detection(Actor):
    """Motion or sound: record the detection; a confident one also raises an alert."""

    def __init__(
        self, *, stream: str = "doorbell:detections", alert_confidence: float = 0.9, **options: Any
    ) -> None:
        super().__init__(stream=stream, alert_confidence=alert_confidence, **options)
        self.stream = stream
        self.alert_confidence = alert_confidence

    async def handle(self, event: Envelope, ctx: Context) -> None:
        device = _device(event)
        kind = event.topic.rsplit("/", 1)[-1] or "detection"
        confidence = _number(event, "confidence", 0.0)
        if not 0.0 <= confidence <= 1.0:
            raise PermanentFailure(f"confidence must be between 0 and 1, not {confidence:g}")
        ctx.append(
            self.stream,
            {"event_id": event.id, "device_id": device, "kind": kind, "confidence": confidence},
        )
        if confidence >= self.alert_confidence:
            ctx.emit(f"doorbell/{device}/button_press", {"reason": kind, "confidence": confidence})


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
            kind = event.topic.rsplit("/", 1)[-1]
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
