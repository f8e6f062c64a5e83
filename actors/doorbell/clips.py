"""Doorbell clips: the index of the video and audio clips a doorbell stored in the media store.

Each clip's event (`doorbell/<device>/video_upload` or `audio_upload`, written by the service
once the clip is whole in the store) carries a reference, not the bytes: `clip_id`, `kind`,
`content_type`, `bytes`, `sha256` and `url` (where `GET` streams it). The index keeps one entry
per clip in `stream`, for the review app to page through. A reference that cannot be indexed
is a `PermanentFailure`, kept as a dead letter with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.api import Actor, Context, PermanentFailure

if TYPE_CHECKING:
    from actors.api import Envelope

TEXT_FIELDS = ("clip_id", "kind", "content_type", "sha256", "url")


class ClipIndex(Actor):
    """Appends each stored clip's reference to `stream` (default `doorbell:clips`)."""

    def __init__(self, *, stream: str = "doorbell:clips", **options: Any) -> None:
        super().__init__(stream=stream, **options)
        self.stream = stream

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
        fields["device_id"] = event.key or str(payload.get("device_id", "unknown"))
        ctx.append(self.stream, fields)
