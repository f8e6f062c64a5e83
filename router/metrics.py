"""The Prometheus metrics of one Switchyard process, on an injected registry."""

from __future__ import annotations

import bisect
import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client import Metric

# Seconds; each class's SLA target is added so compliance can be read off a bucket boundary.
BASE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

REJECT_REASONS = (
    "decode_error", "too_large", "unrouted", "invalid", "internal_error", "write_error",
)  # fmt: skip
OUTCOMES = ("ok", "retried", "dead")
MQTT_OUTCOMES = ("accepted", "kept", "dropped")
MEDIA_OUTCOMES = (
    "stored", "repeated", "too_large", "bad_checksum", "unsupported_type", "bad_request",
    "conflict", "aborted", "unavailable", "failed",
)  # fmt: skip
MEDIA_DELETIONS = ("retention", "abandoned")


def latency_buckets(sla_targets_s: Iterable[float]) -> tuple[float, ...]:
    """The base buckets plus every SLA target, sorted and without duplicates."""
    return tuple(sorted({*BASE_BUCKETS, *(round(t, 6) for t in sla_targets_s)}))


class Metrics:
    """Every metric Switchyard exports. One instance per service; tests pass a fresh registry."""

    def __init__(self, registry: CollectorRegistry, sla_targets_s: Iterable[float] = ()) -> None:
        self.registry = registry
        # Held while figures that are read against each other move together (a pool's
        # processed events and their SLA breaches), and while a rendering reads them: a scrape
        # never sees a flush half applied, which a burn-rate ratio would show as a spike.
        self.moving = threading.Lock()
        buckets = latency_buckets(sla_targets_s)
        self.ingested = Counter(
            "switchyard_events_ingested_total",
            "Events accepted into a class stream.",
            ["class", "source"],
            registry=registry,
        )
        self.processed = Counter(
            "switchyard_events_processed_total",
            "Events whose handling finished, by outcome (ok, retried, dead).",
            ["class", "outcome"],
            registry=registry,
        )
        self.deduplicated = Counter(
            "switchyard_events_deduplicated_total",
            "Events not written because their id had already arrived in the class within the "
            "de-duplication window (a repeated source event_id, or a repeated emit).",
            ["class", "source"],
            registry=registry,
        )
        self.rejected = Counter(
            "switchyard_events_rejected_total",
            "Events refused or kept aside at ingress, by reason.",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "switchyard_event_latency_seconds",
            "Ingest to acknowledgement, end to end.",
            ["class", "lane"],
            buckets=buckets,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "switchyard_queue_wait_seconds",
            "Ingest to handler start.",
            ["class", "lane"],
            buckets=buckets,
            registry=registry,
        )
        self.handler = Histogram(
            "switchyard_handler_seconds",
            "Time spent in the actor's handler.",
            ["class"],
            buckets=buckets,
            registry=registry,
        )
        self.inflight = Gauge(
            "switchyard_inflight",
            "Entries fetched by this process and not yet acknowledged, every partition of the "
            "class summed; refreshed every redis.stats_interval_s.",
            ["class"],
            registry=registry,
        )
        self.backlog = Gauge(
            "switchyard_stream_backlog",
            "Entries in the class stream not yet delivered to any consumer.",
            ["class"],
            registry=registry,
        )
        self.pending = Gauge(
            "switchyard_stream_pending",
            "Entries delivered to a consumer and not yet acknowledged.",
            ["class"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "switchyard_redis_errors_total",
            "Redis calls that failed and were retried, by operation.",
            ["operation"],
            registry=registry,
        )
        self.pool_restarts = Counter(
            "switchyard_pool_restarts_total",
            "Times a class pool failed (actor start, Redis set-up) and was restarted.",
            ["class"],
            registry=registry,
        )
        self.config_info = Gauge(
            "switchyard_config_info",
            "1 for the config this process runs: its hash (what it says, not its layout) and "
            "generation (1 at start, one more per reload applied).",
            ["hash", "generation"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "switchyard_config_reloads_total",
            "Reloads by outcome: applied, or refused (the file invalid, or its change not one "
            "that can be made live); a refused file changes nothing.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("applied", "refused"):
            self.config_reloads.labels(outcome)
        self.mqtt_connected: Gauge | None = None
        self.mqtt_messages: Counter | None = None
        self.worker_restarts: Counter | None = None
        self.worker_scrape_errors: Counter | None = None
        self.media: MediaMetrics | None = None
        self.source_latency = Histogram(
            "switchyard_source_latency_seconds",
            "Source timestamp to acknowledgement, for events the source stamped.",
            ["class", "lane"],
            buckets=buckets,
            registry=registry,
        )
        self.sla_target = Gauge(
            "switchyard_sla_target_seconds",
            "Each class's latency target (ingest to ack).",
            ["class"],
            registry=registry,
        )
        self.sla_objective = Gauge(
            "switchyard_sla_objective_ratio",
            "The share of a class's events that must meet its latency target.",
            ["class"],
            registry=registry,
        )
        self.sla_breaches = Counter(
            "switchyard_sla_breaches_total",
            "Events acknowledged later than their class's target, or dead-lettered.",
            ["class"],
            registry=registry,
        )
        self.sla_compliance = Gauge(
            "switchyard_sla_compliance_ratio",
            "Share of the class's finished events that met the target over the last "
            "SLA_WINDOW_S seconds (1 when there were none).",
            ["class"],
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "switchyard_stream_oldest_pending_seconds",
            "Age of the class's oldest entry not yet acknowledged (0 when there is none).",
            ["class"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "switchyard_dead_letters",
            "Entries in the class's dead-letter stream.",
            ["class"],
            registry=registry,
        )
        self.delayed = Gauge(
            "switchyard_stream_delayed",
            "Events of the class waiting in its delay queue for their due time: retries in "
            "backoff and timed waits (a clinic's patients under observation).",
            ["class"],
            registry=registry,
        )
        self.lane_inflight = Gauge(
            "switchyard_lane_inflight",
            "Slots of the process's capacity that each lane holds.",
            ["lane"],
            registry=registry,
        )
        self.lane_waiting = Gauge(
            "switchyard_lane_waiting",
            "Slots each lane is waiting for while the process is saturated.",
            ["lane"],
            registry=registry,
        )
        self.shed = Counter(
            "switchyard_events_shed_total",
            "Events shed by a class's load-shedding policy: refused at ingress or expired.",
            ["class", "action"],
            registry=registry,
        )
        self.trimmed = Counter(
            "switchyard_stream_trimmed_total",
            "Entries removed from a class stream by retention.",
            ["class"],
            registry=registry,
        )
        self.trimmed_unprocessed = Counter(
            "switchyard_events_trimmed_unprocessed_total",
            "Entries the max_len cap removed before every group had finished with them.",
            ["class"],
            registry=registry,
        )
        self.dead_letters_trimmed = Counter(
            "switchyard_dead_letters_trimmed_total",
            "Dead letters removed by retention for being older than dead_letter_max_age_s or "
            "beyond dead_letter_max_len (class _unrouted and _rejected for ingress rejects).",
            ["class"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)

    def enable_mqtt(self) -> tuple[Gauge, Counter]:
        """Create the MQTT ingress's series; a process without MQTT does not export them,
        so an alert on `switchyard_mqtt_connected == 0` means a real disconnection."""
        if self.mqtt_connected is None or self.mqtt_messages is None:
            registry = self.registry
            self.mqtt_connected = Gauge(
                "switchyard_mqtt_connected",
                "1 while the MQTT ingress is connected and subscribed, else 0.",
                registry=registry,
            )
            self.mqtt_messages = Counter(
                "switchyard_mqtt_messages_total",
                "MQTT messages by outcome: accepted into a class stream, kept aside (unrouted or "
                "rejected, with the raw bytes), or dropped (QoS 0 only, when the ingress is full).",
                ["outcome"],
                registry=registry,
            )
            for outcome in MQTT_OUTCOMES:
                self.mqtt_messages.labels(outcome)
        return self.mqtt_connected, self.mqtt_messages

    def enable_media(self) -> MediaMetrics:
        """Create the media store's series; only a process that takes clips exports them."""
        if self.media is None:
            self.media = MediaMetrics(self.registry)
        return self.media

    def enable_workers(self, lanes: Iterable[str]) -> tuple[Counter, Counter]:
        """Create the lane workers' series; only a process that runs workers exports them."""
        if self.worker_restarts is None or self.worker_scrape_errors is None:
            self.worker_restarts = Counter(
                "switchyard_worker_restarts_total",
                "Times a lane's worker process exited unexpectedly and was started again.",
                ["lane"],
                registry=self.registry,
            )
            self.worker_scrape_errors = Counter(
                "switchyard_worker_scrape_errors_total",
                "Times a lane worker did not answer for /metrics (its last answer was used).",
                ["lane"],
                registry=self.registry,
            )
        for lane in lanes:
            self.worker_restarts.labels(lane)
            self.worker_scrape_errors.labels(lane)
        return self.worker_restarts, self.worker_scrape_errors

    def declare_sla(self, cls: str, target_s: float, objective: float) -> None:
        self.sla_target.labels(cls).set(target_s)
        self.sla_objective.labels(cls).set(objective)

    def collected(self) -> list[Metric]:
        """Every metric family as it stands between flushes (see `moving`). It blocks: call it
        in a thread, and format what it returns outside the lock."""
        with self.moving:
            return list(self.registry.collect())

    def declare_class(self, cls: str, lane: str) -> None:
        """Create a class's series up front so dashboards show zeros, not gaps."""
        for outcome in OUTCOMES:
            self.processed.labels(cls, outcome)
        self.latency.labels(cls, lane)
        self.queue_wait.labels(cls, lane)
        self.handler.labels(cls)
        self.inflight.labels(cls)
        self.backlog.labels(cls)
        self.pending.labels(cls)
        self.pool_restarts.labels(cls)
        self.source_latency.labels(cls, lane)
        self.sla_breaches.labels(cls)
        self.sla_compliance.labels(cls).set(1)
        self.oldest_pending.labels(cls)
        self.dead_letters.labels(cls)
        self.delayed.labels(cls)
        self.trimmed.labels(cls)
        self.trimmed_unprocessed.labels(cls)
        self.dead_letters_trimmed.labels(cls)


class MediaMetrics:
    """The media store's series: uploads by outcome, bytes taken, what the store holds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.uploads = Counter(
            "switchyard_media_uploads_total",
            "Clip uploads by outcome: stored, repeated (the same bytes again), too_large, "
            "bad_checksum, unsupported_type, bad_request, conflict (other bytes at a stored "
            "clip's path), aborted (the client went away), unavailable (the event could not be "
            "written yet; the clip is kept and announced later), failed.",
            ["outcome"],
            registry=registry,
        )
        self.uploaded_bytes = Counter(
            "switchyard_media_uploaded_bytes_total",
            "Bytes of the clips stored.",
            registry=registry,
        )
        self.stored_bytes = Gauge(
            "switchyard_media_stored_bytes",
            "Bytes the store's announced clips hold, as of the last sweep.",
            registry=registry,
        )
        self.deleted = Counter(
            "switchyard_media_clips_deleted_total",
            "Clips deleted: past retention, or abandoned mid-write (bytes never whole).",
            ["reason"],
            registry=registry,
        )
        self.recovered = Counter(
            "switchyard_media_clips_recovered_total",
            "Clips stored whose event a crash kept from being written, announced by a sweep.",
            registry=registry,
        )
        for outcome in MEDIA_OUTCOMES:
            self.uploads.labels(outcome)
        for reason in MEDIA_DELETIONS:
            self.deleted.labels(reason)


SLA_WINDOW_S = 300.0


class SlaWindow:
    """Met and missed counts over a rolling window, in fixed time slices (no per-event memory)."""

    def __init__(self, window_s: float = SLA_WINDOW_S, slices: int = 30) -> None:
        self.slice_s = window_s / slices
        self.slices = slices
        self._met = [0] * slices
        self._missed = [0] * slices
        self._stamp = [-1] * slices  # which slice number each position currently holds

    def record(self, now: float, met: int, missed: int) -> None:
        position = self._position(now)
        self._met[position] += met
        self._missed[position] += missed

    def compliance(self, now: float) -> float:
        """Share met within the window; 1.0 when nothing finished in it."""
        current = int(now // self.slice_s)
        live = [i for i in range(self.slices) if current - self._stamp[i] < self.slices]
        met = sum(self._met[i] for i in live)
        total = met + sum(self._missed[i] for i in live)
        return met / total if total else 1.0

    def _position(self, now: float) -> int:
        number = int(now // self.slice_s)
        position = number % self.slices
        if self._stamp[position] != number:
            self._stamp[position] = number
            self._met[position] = self._missed[position] = 0
        return position


def finished_by_class(metrics: Metrics) -> dict[str, tuple[float, list[tuple[float, float]]]]:
    """Per class: events finished ok, and the cumulative latency buckets.

    Only those two families are read: with the default config, a pass over the whole registry
    (every histogram of every class) held the event loop about 9 ms per report, reading the
    two 2.6 ms (bench.status_report).
    """
    done: dict[str, float] = {}
    for metric in metrics.processed.collect():
        for sample in metric.samples:
            if sample.name == metric.name + "_total" and sample.labels["outcome"] == "ok":
                done[sample.labels["class"]] = sample.value
    buckets: dict[str, list[tuple[float, float]]] = {}
    for metric in metrics.latency.collect():
        for sample in metric.samples:
            if sample.name == metric.name + "_bucket":
                bucket = (float(sample.labels["le"]), sample.value)
                buckets.setdefault(sample.labels["class"], []).append(bucket)
    return {
        cls: (done.get(cls, 0.0), sorted(buckets.get(cls, [])))
        for cls in done.keys() | buckets.keys()
    }


def histogram_buckets(
    registry: CollectorRegistry, name: str, labels: dict[str, str]
) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of one histogram series, read from `registry`."""
    out = []
    for metric in registry.collect():
        if metric.name != name:
            continue
        for sample in metric.samples:
            if sample.name != f"{name}_bucket":
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                out.append((float(sample.labels["le"]), sample.value))
    return sorted(out)


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Estimate a quantile from cumulative buckets, interpolating inside a bucket like PromQL."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


class Observations:
    """Observations of one histogram series gathered over a flush and applied at once.

    `Histogram.observe` takes two locks per value; a pool observes several per event, which
    was the largest single cost of the consume path. This keeps plain counts and applies them
    with one increment per touched bucket. It relies on prometheus-client's histogram child
    keeping `_upper_bounds`, `_buckets` and `_sum` (true since 0.4); without them it falls
    back to `observe`.
    """

    def __init__(self, series: Any) -> None:
        self._series = series
        self._bounds: list[float] | None = getattr(series, "_upper_bounds", None)
        fast = self._bounds is not None and hasattr(series, "_buckets") and hasattr(series, "_sum")
        self._counts = [0] * len(self._bounds) if fast and self._bounds else []
        self._sum = 0.0
        self._values: list[float] = []

    def add_all(self, values: list[float]) -> None:
        """Count `values` (seconds; a negative one, from clocks apart, counts as 0)."""
        if not (self._counts and self._bounds is not None):
            self._values += [max(0.0, value) for value in values]
            return
        if len(values) * 4 > len(self._bounds):
            self._add_sorted(sorted(values))
            return
        bounds, counts, total = self._bounds, self._counts, 0.0
        for value in values:
            seconds = max(value, 0.0)
            counts[bisect.bisect_left(bounds, seconds)] += 1
            total += seconds
        self._sum += total

    def _add_sorted(self, values: list[float]) -> None:
        """Many values at once: sorted, each bucket's count is the difference of two
        bisections, so the work per value is the sort's, in C."""
        assert self._bounds is not None
        negative = bisect.bisect_left(values, 0.0)  # counted as 0: in the first bucket
        counts, below = self._counts, 0
        for index, bound in enumerate(self._bounds):
            upto = bisect.bisect_right(values, bound, lo=below)
            counts[index] += upto - below
            below = upto
        self._sum += sum(values[negative:])

    def flush(self) -> None:
        if self._counts:
            for index, count in enumerate(self._counts):
                if count:
                    self._series._buckets[index].inc(count)
                    self._counts[index] = 0
            if self._sum:
                self._series._sum.inc(self._sum)
                self._sum = 0.0
        for value in self._values:
            self._series.observe(value)
        self._values.clear()
