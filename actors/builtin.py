"""Built-in actors: a structured log line per event, and a tap that forwards events to a stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from actors.api import Actor, Context

if TYPE_CHECKING:
    from actors.api import Envelope


class Log(Actor):
    """Logs each event (id, class, key, payload) at info level."""

    async def handle(self, event: Envelope, ctx: Context) -> None:
        ctx.log.info("event", event_id=event.id, key=event.key, payload=event.payload)


class Forward(Actor):
    """Appends each event, with its id, class and payload, to a named Redis stream (an audit tap).

    Options: `stream` (required), the stream key to append to.
    """

    def __init__(self, *, stream: str, **options: Any) -> None:
        super().__init__(stream=stream, **options)
        if not stream:
            raise ValueError("Forward needs a non-empty 'stream' option")
        self.stream = stream

    async def handle(self, event: Envelope, ctx: Context) -> None:
        ctx.append(
            self.stream,
            {
                "id": event.id,
                "class": event.cls,
                "key": event.key or "",
                "ingest_ts": event.ingest_ts,
                "payload": msgpack.packb(event.payload, use_bin_type=True),
            },
        )
