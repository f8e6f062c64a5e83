"""A pool's accounting as a scrape reads it (router/runtime/accounting.py)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry

from router.clock import SystemClock
from router.config import parse_config
from router.metrics import Metrics
from router.runtime.accounting import Accounting
from router.runtime.context import NO_OUTPUTS
from router.runtime.done import Done
from router.runtime.policies import Failures
from router.streams.envelope import Envelope

if TYPE_CHECKING:
    from prometheus_client import Metric

CONFIG = """\
lanes: [{name: low}]
routes: [{topic: "slow/#", class: slow}]
classes:
  slow: {lane: low, actor: "actors.builtin:Log", sla: {target_ms: 1, objective: 0.99}}
"""


def _value(families: list[Metric], name: str) -> float:
    return sum(s.value for f in families for s in f.samples if s.name == name)


class _ScrapedMidway:
    """A breaches counter that lets a scrape run, from another thread, just before it counts:
    the scrape must wait for the flush, or it sees events without their breaches."""

    def __init__(self, counter: Any, metrics: Metrics) -> None:
        self.counter = counter
        self.metrics = metrics
        self.seen: list[Metric] = []
        self.scraping: threading.Thread | None = None

    def inc(self, amount: float) -> None:
        scrape = threading.Thread(target=lambda: self.seen.extend(self.metrics.collected()))
        scrape.start()
        scrape.join(timeout=0.2)  # it is blocked for as long as the flush is being applied
        self.counter.inc(amount)
        self.scraping = scrape


def test_a_scrape_never_sees_late_events_without_their_breaches() -> None:
    config = parse_config(CONFIG, environ={})
    cls = config.classes["slow"]
    metrics = Metrics(CollectorRegistry(), [0.001])
    accounting = Accounting(
        "slow", cls, metrics, clock=SystemClock(), failures=Failures(cls.retry),
        log=structlog.get_logger("test"),
    )  # fmt: skip
    midway = _ScrapedMidway(accounting._breaches, metrics)
    accounting._breaches = midway  # type: ignore[assignment]
    late = [Envelope(f"e{i}", "slow", "low", {}, ingest_ts=1.0) for i in range(5)]
    done = Done([b"1-0"] * 5, late, NO_OUTPUTS, started=1.5, handler_s=0.5)
    accounting.account([done], now=10.0, written=Counter(), repeated=Counter())
    assert midway.scraping is not None
    midway.scraping.join(timeout=5)
    processed = _value(midway.seen, "switchyard_events_processed_total")
    breaches = _value(midway.seen, "switchyard_sla_breaches_total")
    assert (processed, breaches) == (5, 5)
