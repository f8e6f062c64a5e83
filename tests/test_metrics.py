"""Metric definitions and the histogram helpers the demo summary uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from router.config import load_config
from router.metrics import (
    Metrics,
    Observations,
    SlaWindow,
    histogram_buckets,
    latency_buckets,
    quantile,
)
from router.ops.status import Reporter


def test_every_sla_target_is_a_latency_bucket_boundary() -> None:
    buckets = latency_buckets([0.2, 0.15, 0.2])
    assert 0.2 in buckets
    assert 0.15 in buckets
    assert list(buckets) == sorted(set(buckets))


def test_declared_classes_export_zeros_before_any_event() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, [0.1])
    metrics.declare_class("doorbell.button_press", "high")
    labels = {"class": "doorbell.button_press", "outcome": "dead"}
    assert registry.get_sample_value("switchyard_events_processed_total", labels) == 0.0
    assert (
        registry.get_sample_value("switchyard_events_rejected_total", {"reason": "unrouted"}) == 0.0
    )
    text = generate_latest(registry).decode()
    assert (
        'switchyard_event_latency_seconds_bucket{class="doorbell.button_press",lane="high",le="0.1"}'
        in text
    )


def test_quantiles_interpolate_inside_the_bucket() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    series = metrics.latency.labels("c", "l")
    for value in [0.0007] * 50 + [0.002] * 49 + [0.04]:
        series.observe(value)
    buckets = histogram_buckets(
        registry, "switchyard_event_latency_seconds", {"class": "c", "lane": "l"}
    )
    median = quantile(buckets, 0.5)
    p99 = quantile(buckets, 0.99)
    assert median is not None
    assert 0.0005 <= median <= 0.001
    assert p99 is not None
    assert 0.001 <= p99 <= 0.0025
    assert quantile([], 0.5) is None


def test_sla_compliance_counts_only_the_rolling_window() -> None:
    window = SlaWindow(window_s=60, slices=6)
    window.record(now=0, met=9, missed=1)
    assert window.compliance(now=5) == 0.9
    window.record(now=30, met=10, missed=0)
    assert window.compliance(now=35) == 0.95
    # 65 s on, the first slice has left the window; only the second counts.
    assert window.compliance(now=65) == 1.0
    assert window.compliance(now=200) == 1.0  # nothing finished in the window


@pytest.mark.parametrize("chunk", [4, 500], ids=["a few at a time", "a flush of many"])
def test_gathered_observations_export_exactly_what_observe_would(chunk: int) -> None:
    """Values on bucket bounds, between them, past the last, and below 0 (clocks apart)."""
    bounds = [0.0, 0.0004, 0.0005, 0.0007, 0.003, 0.2, 0.25, 7.0, 100.0, -0.002]
    values = [v * (1 + (i % 7) / 10) if i % 3 else v for i, v in enumerate(bounds * 60)]
    one_by_one, gathered = CollectorRegistry(), CollectorRegistry()
    direct = Metrics(one_by_one).latency.labels("c", "l")
    for value in values:
        direct.observe(max(value, 0.0))
    batch = Observations(Metrics(gathered).latency.labels("c", "l"))
    for start in range(0, len(values), chunk):
        batch.add_all(values[start : start + chunk])
    batch.flush()
    batch.flush()  # a second flush adds nothing
    name = "switchyard_event_latency_seconds"
    labels = {"class": "c", "lane": "l"}
    assert histogram_buckets(gathered, name, labels) == histogram_buckets(one_by_one, name, labels)
    assert gathered.get_sample_value(f"{name}_sum", labels) == pytest.approx(
        one_by_one.get_sample_value(f"{name}_sum", labels)
    )


def test_a_report_gives_each_class_its_own_rate_and_latency_since_the_last_report() -> None:
    config = load_config(Path(__file__).parent.parent / "config.yaml", environ={})
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for name, cls in config.classes.items():
        metrics.declare_class(name, cls.lane)
    reporter = Reporter(config, metrics)
    quick, slow = "doorbell.button_press", "music.interactions"
    lane = config.classes[quick].lane
    reporter.report(100.0, {}, {})
    metrics.processed.labels(quick, "ok").inc(40)
    metrics.processed.labels(quick, "dead").inc(7)  # not finished: not in the rate
    metrics.processed.labels(slow, "ok").inc(10)
    for _ in range(40):
        metrics.latency.labels(quick, lane).observe(0.0007)
    for _ in range(10):
        metrics.latency.labels(slow, config.classes[slow].lane).observe(3.0)

    classes = reporter.report(102.0, {quick: 3}, {quick: 0.5})["classes"]

    assert classes[quick]["rate"] == pytest.approx(20.0)
    assert classes[quick]["inflight"] == 3
    assert classes[quick]["compliance"] == 0.5
    assert 0.0005 <= classes[quick]["p99_s"] <= 0.001
    assert classes[slow]["rate"] == pytest.approx(5.0)
    assert classes[slow]["p50_s"] >= 2.5
    assert classes["clinic.arrival"]["rate"] == 0.0
    assert reporter.report(104.0, {}, {})["classes"][quick]["rate"] == 0.0  # only what is new
