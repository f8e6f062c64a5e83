"""What a running service shows: per-pool figures for reports, readiness, the per-class view
and the metrics exposition merged with its lane workers'. The service's `Observed` side."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Protocol

from router.ops import health
from router.ops.console import Consoled
from router.ops.exposition import merge, parse, render
from router.streams import keys
from router.streams.transport import UNAVAILABLE, per_class

if TYPE_CHECKING:
    from collections.abc import Mapping

    from router.clock import Clock
    from router.ingress.mqtt import MqttIngress
    from router.metrics import Metrics
    from router.runtime.pool import Pool
    from router.service.lane_workers import Workers
    from router.streams.transport import Transport


class Running(Consoled, Protocol):
    """What the views read of a running service (a `Service` is one): what the console
    reads, and more."""

    @property
    def clock(self) -> Clock: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def pools(self) -> Mapping[str, Pool]: ...
    @property
    def mqtt(self) -> MqttIngress | None: ...
    @property
    def workers(self) -> Workers | None: ...


class ServiceViews:
    """Reads a running service for its HTTP views, its status reports and the demo."""

    def __init__(self, service: Running) -> None:
        self.service = service

    def config_said(self) -> dict[str, Any]:
        """The config this process runs: its fingerprint, and reloads applied since start."""
        return {"hash": self.service.config_hash, "generation": self.service.config_generation}

    def pool_figures(self) -> tuple[dict[str, int], dict[str, float]]:
        """Per class: entries in flight here (all its partitions), and SLA compliance over the
        rolling window."""
        now = self.service.clock.monotonic()
        inflight: dict[str, int] = {}
        compliance: dict[str, float] = {}
        for pool in self.service.pools.values():
            inflight[pool.cls] = inflight.get(pool.cls, 0) + pool.inflight
            compliance[pool.cls] = pool.sla_window.compliance(now)  # one window per class
        return inflight, compliance

    def pool_views(self) -> Mapping[str, Any]:
        """Per class: its pools here, their partitions summed."""
        views: dict[str, dict[str, Any]] = {}
        for pool in self.service.pools.values():
            view = views.get(pool.cls)
            if view is None:
                views[pool.cls] = {**pool.snapshot(), "partitions": 1}
                continue
            view["inflight"] += pool.inflight
            view["running"] = view["running"] and pool.running
            view["partitions"] += 1
        return views

    async def readiness_problems(self) -> list[str]:
        problems = await health.readiness_problems(
            self.service.transport, self.service.mqtt, self.service.pools
        )
        if self.service.workers is not None:
            problems += await self.service.workers.problems()
        return problems

    async def class_views(self) -> Mapping[str, Any]:
        """/classes: the classes of this process and of its lane workers, with fresh figures."""
        stats = self.service.stats
        with contextlib.suppress(*UNAVAILABLE):  # the last known figures are still worth showing
            stats = per_class(await self.service.transport.stats(self._every_partition()))
        pools = dict(self.pool_views())
        if self.service.workers is not None:
            pools.update(await self.service.workers.class_views())
        return health.class_views(self.service.config, stats, pools)

    def _every_partition(self) -> list[str]:
        config = self.service.config
        return [t for name, c in config.classes.items() for t in keys.tags(name, c.partitions)]

    async def exposition(self) -> bytes:
        """This process's metrics merged with its lane workers': one scrape per instance.
        Rendered in a thread: a rendering takes milliseconds the event loop should not wait."""
        metrics = self.service.metrics
        own = await asyncio.to_thread(lambda: render(metrics.collected()))
        if self.service.workers is None:
            return own
        sources = await self.service.workers.metric_sources()
        return await asyncio.to_thread(lambda: render(merge([parse(own.decode()), *sources])))
