"""A no-op actor, so a benchmark measures Switchyard's own cost and not a handler's."""

from __future__ import annotations

from collections.abc import Sequence

from actors.api import Actor, Context
from router.envelope import Envelope


class NoOp(Actor):
    """Does nothing with each event (or batch); the event is then acknowledged as usual."""

    async def handle(self, event: Envelope, ctx: Context) -> None:
        return None

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        return None
