"""A pool's accounting as a scrape reads it (router/runtime/accounting.py)."""

from __future__ import annotations

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
    import threading

CONFIG = """\
lanes: [{name: low}]
routes: [{topic: "slow/#", class: slow}]
classes:
  slow: {lane: low, actor: "actors.builtin:Log", sla: {target_ms: 1, objective: 0.99}}
"""


class _Watched:
    """A counter child that notes whether `lock` was held each time it moved."""

    def __init__(self, counter: Any, lock: threading.Lock, moves: list[bool]) -> None:
        self.counter, self.lock, self.moves = counter, lock, moves

    def inc(self, amount: float = 1) -> None:
        self.moves.append(self.lock.locked())
        self.counter.inc(amount)


def test_a_flush_moves_its_events_and_breaches_only_where_no_scrape_reads() -> None:
    """A scrape reads under `Metrics.moving`, and a flush moves processed events and their
    SLA breaches under it too: no scrape sees the events without their breaches."""
    config = parse_config(CONFIG, environ={})
    cls = config.classes["slow"]
    metrics = Metrics(CollectorRegistry(), [0.001])
    accounting = Accounting(
        "slow", cls, metrics, clock=SystemClock(), failures=Failures(cls.retry),
        log=structlog.get_logger("test"),
    )  # fmt: skip
    moves: list[bool] = []
    accounting._breaches = _Watched(accounting._breaches, metrics.moving, moves)  # type: ignore[assignment]
    accounting._processed["ok"] = _Watched(accounting._processed["ok"], metrics.moving, moves)  # type: ignore[assignment]
    late = [Envelope(f"e{i}", "slow", "low", {}, ingest_ts=1.0) for i in range(5)]
    done = Done([b"1-0"] * 5, late, NO_OUTPUTS, started=1.5, handler_s=0.5)
    accounting.account([done], now=10.0, written=Counter(), repeated=Counter())

    read_locked: list[bool] = []
    collect = metrics.registry.collect

    def watched_collect() -> Any:
        read_locked.append(metrics.moving.locked())
        return collect()

    metrics.registry.collect = watched_collect  # type: ignore[method-assign]
    families = metrics.collected()
    found = {
        s.name: s.value
        for f in families
        for s in f.samples
        if s.labels.get("class") == "slow" and s.labels.get("outcome", "ok") == "ok"
    }

    assert moves == [True, True]  # processed, then breaches: both under the lock
    assert read_locked == [True]
    assert found["switchyard_events_processed_total"] == 5
    assert found["switchyard_sla_breaches_total"] == 5
