"""The stats loop of a process: every `stats_interval_s`, the streams' figures from Redis, the
per-class gauges, and this instance's report for `switchyard status`.

It is also how a process notices Redis going away and coming back: the figures feed load
shedding at ingress, so they are kept fresh.

A partition's figures cost four commands. One service computes them (the partition's
`keeper`) and shares them in one hash; every other process reads that hash, and computes
itself only what nobody shared lately. So the cost does not grow with the instances.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import astuple
from typing import TYPE_CHECKING, Any

import structlog

from router.backoff import Backoff
from router.ops.status import Reporter
from router.streams import keys
from router.streams.transport import UNAVAILABLE, StreamStats, per_class

if TYPE_CHECKING:
    from collections.abc import Callable

    from router.clock import Clock
    from router.config import Config
    from router.metrics import Metrics
    from router.runtime.scheduler import LaneScheduler
    from router.streams.client import RedisClient
    from router.streams.transport import Transport

log = structlog.get_logger("switchyard.stats")

Figures = tuple[dict[str, int], dict[str, float]]  # per class: in flight, SLA compliance


class StatsLoop:
    """Refreshes stream figures, gauges and the instance report; tracks Redis health."""

    def __init__(
        self,
        config: Config,
        transport: Transport,
        redis: RedisClient,
        metrics: Metrics,
        *,
        clock: Clock,
        scheduler: LaneScheduler,
        tags: list[str],
        figures: Callable[[], Figures],
        fresh: Callable[[dict[str, StreamStats]], None],
        keeper: Callable[[str], bool] = lambda tag: True,
    ) -> None:
        self.config = config
        self.transport = transport
        self.redis = redis
        self.metrics = metrics
        self.clock = clock
        self.scheduler = scheduler
        self.tags = tags  # the partitions watched: the service all, a lane worker its own
        self.figures = figures
        self.fresh = fresh  # told the new figures
        self.keeper = keeper  # whether this process computes and shares a partition's figures
        self.shared = SharedFigures(redis, max_age_s=3 * config.redis.stats_interval_s)
        self.stats: dict[str, StreamStats] = {}  # by class
        self._inflight_shown: set[str] = set()
        self.redis_ok = True
        self.reporter = Reporter(config, metrics)

    def reconfigure(self, config: Config) -> None:
        """Watch and report the classes of a reloaded config (a service watches them all)."""
        self.config = self.reporter.config = config
        self.tags = [
            t for name, cls in config.classes.items() for t in keys.tags(name, cls.partitions)
        ]

    async def run(self) -> None:
        interval = self.config.redis.stats_interval_s
        backoff = Backoff(initial=0.2, maximum=interval)
        reporter = self.reporter
        while True:
            inflight, compliance = self.figures()
            try:
                self.stats = per_class(await self.partition_figures())
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
            self.publish_gauges(inflight, compliance)
            await asyncio.sleep(delay)

    async def partition_figures(self) -> dict[str, StreamStats]:
        """The watched partitions' figures: computed and shared for those this process keeps,
        read from the others' shares, computed for what nobody shared lately."""
        kept = [tag for tag in self.tags if self.keeper(tag)]
        figures = await self.transport.stats(kept) if kept else {}
        now = self.clock.wall()
        if figures:
            await self.shared.publish(figures, now)
        rest = [tag for tag in self.tags if tag not in figures]
        if rest:
            found = await self.shared.read(rest, now)
            missing = [tag for tag in rest if tag not in found]
            figures |= found | (await self.transport.stats(missing) if missing else {})
        return figures

    def publish_gauges(self, inflight: dict[str, int], compliance: dict[str, float]) -> None:
        """Per-class gauges from the last Redis stats and this process's pools: their entries
        in flight (every partition's, summed) and their SLA windows."""
        metrics, wall = self.metrics, self.clock.wall()
        self._inflight_shown |= inflight.keys()
        for name in self._inflight_shown:  # a class whose pools left shows 0, not its last
            metrics.inflight.labels(name).set(inflight.get(name, 0))
        for name, stats in self.stats.items():
            metrics.backlog.labels(name).set(stats.backlog)
            metrics.pending.labels(name).set(stats.pending)
            metrics.dead_letters.labels(name).set(stats.dead_letters)
            metrics.delayed.labels(name).set(stats.delayed)
            age = max(0.0, wall - stats.oldest_ms / 1000) if stats.oldest_ms else 0.0
            metrics.oldest_pending.labels(name).set(age)
        for name, ratio in compliance.items():
            metrics.sla_compliance.labels(name).set(ratio)
        for lane, state in self.scheduler.snapshot().items():
            metrics.lane_inflight.labels(lane).set(state["used"])
            metrics.lane_waiting.labels(lane).set(state["waiting"])


class SharedFigures:
    """Partitions' figures in one hash of the shared slot, each stamped with when it was read."""

    def __init__(self, redis: RedisClient, max_age_s: float) -> None:
        self.redis = redis
        self.max_age_s = max_age_s  # older figures are ignored: their keeper is gone

    async def publish(self, figures: dict[str, StreamStats], now: float) -> None:
        rows = {tag: json.dumps([now, *astuple(stats)]) for tag, stats in figures.items()}
        await self.redis.hset(keys.partition_stats(), mapping=rows)  # type: ignore[arg-type]

    async def read(self, tags: list[str], now: float) -> dict[str, StreamStats]:
        rows: list[Any] = await self.redis.hmget(keys.partition_stats(), tags)
        found = {}
        for tag, row in zip(tags, rows, strict=True):
            if row is None:
                continue
            at, *values = json.loads(row)
            if now - at <= self.max_age_s:
                found[tag] = StreamStats(*values)
        return found
