"""The gauges analytics providers export (`gauges()`), refreshed by one task of the service
every `every_s`, so however many scrapers ask, the figures cost one reading per interval."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from router.ops.analytics import Gauged

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from prometheus_client import CollectorRegistry

    from router.ops.analytics import Analytics, Gauge

log = structlog.get_logger("switchyard.analytics")
EVERY_S = 5.0


class ProviderGauges(Collector):
    """A Prometheus collector of the providers' last gauges, and the task that refreshes them."""

    def __init__(
        self, providers: Mapping[str, Analytics], registry: CollectorRegistry, every_s: float
    ) -> None:
        self.providers = {
            name: provider for name, provider in providers.items() if isinstance(provider, Gauged)
        }
        self.every_s = every_s
        self._latest: dict[str, list[Gauge]] = {}
        if self.providers:
            registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for gauges in list(self._latest.values()):
            for gauge in gauges:
                family = GaugeMetricFamily(
                    f"switchyard_{gauge.name}", gauge.help, labels=list(gauge.labels)
                )
                for values, value in gauge.samples:
                    family.add_metric(list(values), value)
                yield family

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.every_s)

    async def refresh(self) -> None:
        """Each provider's gauges now; one that fails keeps its last figures, and says why."""
        for name, provider in self.providers.items():
            try:
                self._latest[name] = await provider.gauges()
            except Exception as exc:  # Redis away, say: the next round tries again
                log.warning("analytics gauges not refreshed", workload=name, error=repr(exc))
