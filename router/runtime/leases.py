"""Leases: a slow handler's entries stay its own. Their idle time is reset well before
`claim_idle_ms`, so another consumer never mistakes a live, slow handler for a dead one."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from router.runtime.slots import Slots
    from router.streams.transport import Transport


class Leases:
    """Renews the idle time of a pool's held entries every third of `claim_idle_ms`."""

    def __init__(self, tag: str, transport: Transport, slots: Slots, claim_idle_ms: int) -> None:
        self.tag = tag
        self.transport = transport
        self.slots = slots
        self.claim_idle_ms = claim_idle_ms

    @property
    def every_s(self) -> float:
        return self.claim_idle_ms / 3000

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            if self.slots.held:
                with contextlib.suppress(*UNAVAILABLE):  # the next round tries again
                    await self.transport.renew(self.tag, list(self.slots.held))
