"""The stats loop of a process: every `stats_interval_s`, the streams' figures from Redis, the
per-class gauges, and this instance's report for `switchyard status`.

It is also how a process notices Redis going away and coming back: the figures feed load
shedding at ingress, so they are kept fresh.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from router.backoff import Backoff
from router.ops.status import Reporter
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

    from router.clock import Clock
    from router.config import Config
    from router.metrics import Metrics
    from router.runtime.scheduler import LaneScheduler
    from router.streams.transport import StreamStats, Transport

log = structlog.get_logger("switchyard.stats")

Figures = tuple[dict[str, int], dict[str, float]]  # per class: in flight, SLA compliance


class StatsLoop:
    """Refreshes stream figures, gauges and the instance report; tracks Redis health."""

    def __init__(
        self,
        config: Config,
        transport: Transport,
        redis: Redis,
        metrics: Metrics,
        *,
        clock: Clock,
        scheduler: LaneScheduler,
        classes: list[str],
        figures: Callable[[], Figures],
        fresh: Callable[[dict[str, StreamStats]], None],
    ) -> None:
        self.config = config
        self.transport = transport
        self.redis = redis
        self.metrics = metrics
        self.clock = clock
        self.scheduler = scheduler
        self.classes = classes  # the service watches every stream; a lane worker, its own
        self.figures = figures
        self.fresh = fresh  # told the new figures
        self.stats: dict[str, StreamStats] = {}
        self.redis_ok = True

    async def run(self) -> None:
        interval = self.config.redis.stats_interval_s
        backoff = Backoff(initial=0.2, maximum=interval)
        reporter = Reporter(self.config, self.metrics)
        while True:
            inflight, compliance = self.figures()
            try:
                self.stats = await self.transport.stats(self.classes)
                self.fresh(self.stats)
                report = reporter.report(self.clock.monotonic(), inflight, compliance)
                await reporter.publish(self.redis, self.transport.consumer, report, interval)
                self.redis_ok = True
                backoff.reset()
                delay = interval
            except UNAVAILABLE as exc:
                if self.redis_ok:
                    log.warning("redis unreachable", error=str(exc))
                self.redis_ok = False
                delay = backoff.next_delay()
            self.publish_gauges(compliance)
            await asyncio.sleep(delay)

    def publish_gauges(self, compliance: dict[str, float]) -> None:
        """Per-class gauges from the last Redis stats and the pools' SLA windows."""
        metrics, wall = self.metrics, self.clock.wall()
        for name, stats in self.stats.items():
            metrics.backlog.labels(name).set(stats.backlog)
            metrics.pending.labels(name).set(stats.pending)
            metrics.dead_letters.labels(name).set(stats.dead_letters)
            age = max(0.0, wall - stats.oldest_ms / 1000) if stats.oldest_ms else 0.0
            metrics.oldest_pending.labels(name).set(age)
        for name, ratio in compliance.items():
            metrics.sla_compliance.labels(name).set(ratio)
        for lane, state in self.scheduler.snapshot().items():
            metrics.lane_inflight.labels(lane).set(state["used"])
            metrics.lane_waiting.labels(lane).set(state["waiting"])
