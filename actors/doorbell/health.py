"""Fleet health for owners: a doorbell that went quiet, and the same one back.

The service announces `doorbell/<device>/offline` and `.../online` (router/fleet); this actor
tells the device's owner, as an `offline` or `online` alert. A device nobody registered has
no owner: its announcements are only logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.api import Actor, Alert, PermanentFailure
from actors.doorbell.timeline import emit as put_on_timeline

if TYPE_CHECKING:
    from actors.api import Context, Envelope

STATES = ("offline", "online")
SOURCE = "fleet"  # what the service's own announcements say they came from


class FleetAlert(Actor):
    """`offline` and `online` alerts to the owner of the device announced, and an entry on
    its timeline (option `timeline`: the class that keeps it), registered or not."""

    def __init__(self, *, timeline: str | None = None, **options: Any) -> None:
        super().__init__(timeline=timeline, **options)
        self.timeline = timeline

    async def handle(self, event: Envelope, ctx: Context) -> None:
        payload = event.payload if isinstance(event.payload, dict) else {}
        device, state = payload.get("device_id"), payload.get("state")
        if event.source != SOURCE:  # posted from outside: nobody may fake a device's state
            raise PermanentFailure(
                f"{state!r:.20} announcements come from the service, not {event.source}"
            )
        if not isinstance(device, str) or state not in STATES:
            raise PermanentFailure(f"not a fleet announcement: {payload!r:.80}")
        at = payload.get("at")
        details = {"since": at} if isinstance(at, (int, float)) else {}
        if await ctx.device(device) is None:
            ctx.log.info("unregistered device changed state", device_id=device, state=state)
        else:
            await ctx.notify(Alert(state, device, event.id, event.ingest_ts, details))
        put_on_timeline(ctx, event, device, state, to=self.timeline, details=details)
