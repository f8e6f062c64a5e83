"""The media store's upkeep: at start and every `sweep_every_s`, delete the clips past
`retention_s` (bytes and manifests) and what a dead write left behind, and announce the clips
a crash or an outage left stored without their event.

One task of the service runs it (owned by its supervisor, cancelled at stop). Every instance
may sweep the same store: deleting twice is harmless, and an announcement written twice has the
same event id, which Redis de-duplicates.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from router.ingress.media import NOT_ANNOUNCED

if TYPE_CHECKING:
    from router.clock import Clock
    from router.config import MediaConfig
    from router.ingress.media import Announcer
    from router.metrics import MediaMetrics
    from router.storage.clips import ClipStore, Sweep

log = structlog.get_logger("switchyard.media")


class MediaUpkeep:
    """Sweeps one media store, for ever (`run`) or once (`sweep`)."""

    def __init__(
        self,
        config: MediaConfig,
        clips: ClipStore,
        announcer: Announcer,
        metrics: MediaMetrics,
        clock: Clock,
    ) -> None:
        self.config = config
        self.clips = clips
        self.announcer = announcer
        self.metrics = metrics
        self.clock = clock

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # the store away: try again next time, stay up
                log.warning("media sweep failed", store=self.config.store, error=repr(exc))
            await asyncio.sleep(self.config.sweep_every_s)

    async def sweep(self) -> Sweep:
        """One pass; returns what it found."""
        config = self.config
        now = self.clock.wall()
        done = await self.clips.sweep(now, config.retention_s, config.recover_after_s)
        self.metrics.deleted.labels("retention").inc(done.expired)
        self.metrics.deleted.labels("abandoned").inc(done.abandoned)
        for clip in done.recover:
            try:
                _, accepted = await self.announcer.announce(clip)
            except NOT_ANNOUNCED as exc:
                log.warning("clip still not announced", path=clip.path, error=str(exc))
                break  # Redis is away: every other would fail alike
            done.stored_bytes += clip.size
            self.metrics.recovered.inc()
            log.info("clip announced after a crash", path=clip.path, event_id=accepted.id)
        self.metrics.stored_bytes.set(done.stored_bytes)
        if done.expired or done.abandoned:
            log.info("media swept", expired=done.expired, abandoned=done.abandoned)
        return done
