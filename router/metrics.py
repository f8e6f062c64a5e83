"""The Prometheus metrics of one Switchyard process, on an injected registry."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds; each class's SLA target is added so compliance can be read off a bucket boundary.
BASE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

REJECT_REASONS = ("decode_error", "too_large", "unrouted", "invalid")
OUTCOMES = ("ok", "retried", "dead")
MQTT_OUTCOMES = ("accepted", "kept", "dropped")


def latency_buckets(sla_targets_s: Iterable[float]) -> tuple[float, ...]:
    """The base buckets plus every SLA target, sorted and without duplicates."""
    return tuple(sorted({*BASE_BUCKETS, *(round(t, 6) for t in sla_targets_s)}))


class Metrics:
    """Every metric Switchyard exports. One instance per service; tests pass a fresh registry."""

    def __init__(self, registry: CollectorRegistry, sla_targets_s: Iterable[float] = ()) -> None:
        self.registry = registry
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
            "Entries fetched by this process and not yet acknowledged.",
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
        for outcome in MQTT_OUTCOMES:
            self.mqtt_messages.labels(outcome)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)

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
        self.trimmed.labels(cls)
        self.trimmed_unprocessed.labels(cls)


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
