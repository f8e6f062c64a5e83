"""Music-streaming interactions: kept as a durable, analysable log of what users do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.api import Actor, Context, PermanentFailure

if TYPE_CHECKING:
    from actors.api import Envelope

# What analytics reads later: who did what, when, where in the app, on what, to which track.
LOG_FIELDS = (
    "user_id", "action", "timestamp", "screen", "section", "device", "platform", "app_version",
    "track", "artist", "genre", "channel", "playlist",
)  # fmt: skip


class InteractionLog(Actor):
    """Appends each interaction to the durable log stream (option `stream`)."""

    def __init__(self, *, stream: str = "music:interactions", **options: Any) -> None:
        super().__init__(stream=stream, **options)
        self.stream = stream

    async def handle(self, event: Envelope, ctx: Context) -> None:
        payload = event.payload
        record: dict[str, str | bytes | int | float] = {"event_id": event.id}
        for name in LOG_FIELDS:
            value = payload.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                kind = type(value).__name__
                raise PermanentFailure(f"{name} is a {kind}; the log takes text or numbers")
            record[name] = value
        ctx.append(self.stream, record)
