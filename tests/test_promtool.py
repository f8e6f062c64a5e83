"""The exported metrics pass `promtool check metrics` (installed by .ci/run when missing)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from router.metrics import Metrics

PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (.ci/run installs it)")
def test_metrics_output_passes_promtool_lint() -> None:
    assert PROMTOOL is not None
    registry = CollectorRegistry()
    metrics = Metrics(registry, [0.1, 0.5])
    metrics.declare_class("doorbell.button_press", "high")
    metrics.ingested.labels("doorbell.button_press", "http").inc(3)
    metrics.latency.labels("doorbell.button_press", "high").observe(0.004)
    metrics.enable_media().uploads.labels("stored").inc()
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
