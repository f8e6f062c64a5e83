"""The Prometheus files in deploy/prometheus/ pass promtool: config, rules and rule unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package `prometheus`; .ci/run installs it)",
)


def promtool(*args: str) -> None:
    """Run promtool from the repository root and fail with its output unless it exits 0."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    output = f"$ promtool {' '.join(args)}\n{result.stdout}{result.stderr}"
    assert result.returncode == 0, output


@needs_promtool
def test_prometheus_config_is_valid() -> None:
    promtool("check", "config", "deploy/prometheus/prometheus.yml")


@needs_promtool
def test_alert_rules_are_valid() -> None:
    promtool("check", "rules", "deploy/prometheus/alerts.yml")


@needs_promtool
def test_alert_rules_pass_their_unit_tests() -> None:
    promtool("test", "rules", "deploy/prometheus/alerts_test.yml")
