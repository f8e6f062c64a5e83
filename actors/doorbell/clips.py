"""Doorbell clips: the index of the video and audio clips a doorbell stored in the media store.

Each clip's event (`doorbell/<device>/video_upload` or `audio_upload`, written by the service
once the clip is whole in the store) carries a reference, not the bytes: `clip_id`, `kind`,
`content_type`, `bytes`, `sha256` and `url` (where `GET` streams it). The index keeps one entry
per clip in `stream`, for the review app to page through, and puts the clip, with its link,
on the device's timeline (`timeline`). A reference that cannot be indexed is a
`PermanentFailure`, kept as a dead letter with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.api import Actor, Context, PermanentFailure
from actors.doorbell.timeline import emit as put_on_timeline

if TYPE_CHECKING:
    from actors.api import Envelope

TEXT_FIELDS = ("clip_id", "kind", "content_type", "sha256", "url")


class ClipIndex(Actor):
    """Appends each stored clip's reference to `stream` (default `doorbell:clips`), and puts
    it on the `timeline` class when given one."""

    def __init__(
        self, *, stream: str = "doorbell:clips", timeline: str | None = None, **options: Any
    ) -> None:
        super().__init__(stream=stream, timeline=timeline, **options)
        self.stream = stream
        self.timeline = timeline

    async def handle(self, event: Envelope, ctx: Context) -> None:
        payload = event.payload if isinstance(event.payload, dict) else {}
        fields: dict[str, str | int] = {"event_id": event.id}
        for name in TEXT_FIELDS:
            value = payload.get(name)
            if not isinstance(value, str) or not value:
                raise PermanentFailure(f"a clip reference without {name} (a non-empty string)")
            fields[name] = value
        size = payload.get("bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PermanentFailure(f"bytes must be a whole number, not {size!r:.40}")
        fields["bytes"] = size
        device = event.key or str(payload.get("device_id", "unknown"))
        fields["device_id"] = device
        ctx.append(self.stream, fields)
        details = {name: fields[name] for name in ("clip_id", "content_type", "bytes")}
        put_on_timeline(
            ctx, event, device, str(fields["kind"]),
            to=self.timeline, details=details, clip_url=str(fields["url"]),
        )  # fmt: skip
