"""Connected-doorbell actors: instant alerts, quick detections, batched readings, stored video."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.api import Actor, Context

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.envelope import Envelope


def _device(event: Envelope) -> str:
    return event.key or str(event.payload.get("device_id", "unknown"))


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
        confidence = float(event.payload.get("confidence", 0.0))
        ctx.append(
            self.stream,
            {"event_id": event.id, "device_id": device, "kind": kind, "confidence": confidence},
        )
        if confidence >= self.alert_confidence:
            ctx.emit(f"doorbell/{device}/button_press", {"reason": kind, "confidence": confidence})


class ReadingSummary(Actor):
    """Temperature and light readings, summarised per device and kind for each batch."""

    def __init__(self, *, stream: str = "doorbell:readings", **options: Any) -> None:
        super().__init__(stream=stream, **options)
        self.stream = stream

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        groups: dict[tuple[str, str], list[float]] = {}
        for event in events:
            value = event.payload.get("value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kind = event.topic.rsplit("/", 1)[-1]
                groups.setdefault((_device(event), kind), []).append(float(value))
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
    """A clip upload: index it for later review. A clip without a `clip_id` is an error."""

    def __init__(self, *, stream: str = "doorbell:videos", **options: Any) -> None:
        super().__init__(stream=stream, **options)
        self.stream = stream

    async def handle(self, event: Envelope, ctx: Context) -> None:
        clip = event.payload.get("clip_id")
        if not clip:
            raise ValueError("video_upload without a clip_id")
        ctx.append(
            self.stream,
            {
                "event_id": event.id,
                "device_id": _device(event),
                "clip_id": str(clip),
                "duration_s": float(event.payload.get("duration_s", 0.0)),
                "url": str(event.payload.get("url", "")),
            },
        )
