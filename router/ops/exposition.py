"""One Prometheus exposition from several processes: the service's and its lane workers'.

Prometheus scrapes one endpoint per instance, so the service merges its own metrics with its
workers'. Families merge by name; samples with the same name and labels combine:

- counters, histograms (buckets, `_sum`, `_count`) and summaries add up;
- `*_created` timestamps take the earliest;
- gauges add up (in-flight and lane slots are per process), except those every process reads
  from the same place, which take the largest (SLA settings, and the stream figures read from
  Redis: two processes reading one backlog have one backlog), and SLA compliance, which takes
  the smallest: the worst process's, so a breach is never averaged away.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

Combine = Callable[[float, float], float]
SampleKey = tuple[str, tuple[tuple[str, str], ...]]

GAUGE_RULES: dict[str, Combine] = {
    "switchyard_sla_target_seconds": max,
    "switchyard_sla_objective_ratio": max,
    "switchyard_stream_backlog": max,
    "switchyard_stream_pending": max,
    "switchyard_stream_oldest_pending_seconds": max,
    "switchyard_dead_letters": max,
    "switchyard_stream_delayed": max,
    "switchyard_mqtt_connected": max,
    "switchyard_sla_compliance_ratio": min,
}
CREATED = "_created"


def parse(text: str) -> list[Metric]:
    """The metric families of a text exposition."""
    return list(text_string_to_metric_families(text))


def merge(sources: Iterable[Sequence[Metric]]) -> list[Metric]:
    """The families of every source merged by name, samples combined by the rules above."""
    families: dict[str, Metric] = {}
    samples: dict[str, dict[SampleKey, Sample]] = {}
    for source in sources:
        for family in source:
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                samples[family.name] = {}
            merged = samples[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = merged.get(key)
                if seen is None:
                    merged[key] = sample
                else:
                    value = _rule(family, sample.name)(seen.value, sample.value)
                    merged[key] = seen._replace(value=value)
    for name, family in families.items():
        family.samples = list(samples[name].values())
    return list(families.values())


def lasting(families: Sequence[Metric]) -> list[Metric]:
    """What a process that has exited still counts for: its counters and histograms.

    Kept, a worker's restart does not make the merged counters fall (which Prometheus would
    read as a reset, counting everything again); its gauges and start times go with it.
    """
    kept = []
    for family in families:
        if family.type in ("counter", "histogram", "summary"):
            copy = Metric(family.name, family.documentation, family.type)
            copy.samples = [s for s in family.samples if not s.name.endswith(CREATED)]
            kept.append(copy)
    return kept


def render(families: Sequence[Metric]) -> bytes:
    """The families as a text exposition, written by prometheus_client itself."""
    registry = CollectorRegistry()
    registry.register(_Fixed(families))
    return generate_latest(registry)


def _rule(family: Metric, sample_name: str) -> Combine:
    if sample_name.endswith(CREATED):
        return min
    if family.type == "gauge":
        return GAUGE_RULES.get(family.name, operator.add)
    return operator.add


class _Fixed:
    """A collector of families gathered elsewhere."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
