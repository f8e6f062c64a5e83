"""A pool's bookkeeping of settled entries: outcomes, latencies and SLA compliance, gathered
over one flush and applied to the metrics once (a histogram observation per event was the
largest single cost of the consume path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.metrics import Observations, SlaWindow

if TYPE_CHECKING:
    from collections import Counter

    import structlog

    from router.clock import Clock
    from router.config import ClassConfig
    from router.metrics import Metrics
    from router.runtime.done import Done
    from router.runtime.policies import Failures

OUTCOMES = ("ok", "retried", "dead")


class Accounting:
    """Latency (ingest → ack, queue wait, handler, source → ack), outcomes and the SLA."""

    def __init__(
        self,
        cls: str,
        config: ClassConfig,
        metrics: Metrics,
        *,
        clock: Clock,
        failures: Failures,
        log: structlog.typing.FilteringBoundLogger,
        sla_window: SlaWindow | None = None,
    ) -> None:
        self.clock = clock
        self.failures = failures
        self.log = log
        self.metrics = metrics
        self.target_s = config.sla.target_ms / 1000 if config.sla else None
        self.sla_window = sla_window or SlaWindow()  # shared by a class's partitions here
        lane = config.lane
        self._latency = Observations(metrics.latency.labels(cls, lane))
        self._queue_wait = Observations(metrics.queue_wait.labels(cls, lane))
        self._handler = Observations(metrics.handler.labels(cls))
        self._source_latency = Observations(metrics.source_latency.labels(cls, lane))
        self._processed = {o: metrics.processed.labels(cls, o) for o in OUTCOMES}
        self._breaches = metrics.sla_breaches.labels(cls)

    def account(
        self, batch: list[Done], now: float, written: Counter[str], repeated: Counter[str]
    ) -> None:
        """Outcomes, latency and SLA of settled entries, and the emits their handlers wrote."""
        outcomes = dict.fromkeys(OUTCOMES, 0)
        ok: list[Done] = []
        for done in batch:
            if done.error is None:
                ok.append(done)
                outcomes["ok"] += len(done.events)
            else:
                self._count_failed(done, outcomes)
        # one comprehension per figure for the whole flush: a flush holds one Done per
        # event in queue and stream modes, and a comprehension is a call of its own
        ran = [(done.started, done) for done in batch if done.started is not None]
        handler_times = [done.handler_s for _, done in ran]
        queue_waits = [started - e.ingest_ts for started, done in ran for e in done.events]
        latencies = [now - e.ingest_ts for done in ok for e in done.events]
        source_latencies = [
            now - e.source_ts for done in ok for e in done.events if e.source_ts is not None
        ]
        self._latency.add_all(latencies)
        self._source_latency.add_all(source_latencies)
        self._queue_wait.add_all(queue_waits)
        self._handler.add_all(handler_times)
        missed = 0
        if self.target_s is not None:
            late = sum(latency > self.target_s for latency in latencies)
            missed = late + outcomes["dead"]  # a dead letter never met its target
            self.sla_window.record(self.clock.monotonic(), outcomes["ok"] - late, missed)
        with self.metrics.moving:  # a scrape sees the events and their breaches together
            self._publish(outcomes, written, repeated)
            if missed:
                self._breaches.inc(missed)

    def _count_failed(self, done: Done, outcomes: dict[str, int]) -> None:
        for envelope in done.events:
            if self.failures.retries(done, envelope):
                outcomes["retried"] += 1
                continue
            outcomes["dead"] += 1
            self.log.error(
                "event dead-lettered",
                event_id=envelope.id,
                reason=done.reason,
                attempts=envelope.attempt + 1,
            )

    def _publish(
        self, outcomes: dict[str, int], written: Counter[str], repeated: Counter[str]
    ) -> None:
        for observations in (self._latency, self._source_latency, self._queue_wait, self._handler):
            observations.flush()
        for outcome, count in outcomes.items():
            if count:
                self._processed[outcome].inc(count)
        for cls, count in written.items():
            self.metrics.ingested.labels(cls, "emit").inc(count)
        for cls, count in repeated.items():
            self.metrics.deduplicated.labels(cls, "emit").inc(count)
