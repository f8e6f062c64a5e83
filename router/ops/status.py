"""Status: what every running instance reports into Redis, and the `switchyard status` table.

Each instance writes a small JSON report (per class: in-flight, rate, p50/p99, SLA compliance)
under `sy:{_instances}:report:<consumer>` with a short expiry, and keeps its name in the
`sy:{_instances}` sorted set by last-seen time (one hash tag: one cluster slot). `switchyard
status` reads those reports, the streams themselves and the ordered partitions' leases, so it
works from any machine that reaches Redis.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.metrics import Metrics, finished_by_class, quantile
from router.streams import keys
from router.streams.redis import RedisTransport
from router.streams.transport import StreamStats, per_class

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.config import ClassConfig, Config
    from router.streams.client import RedisClient

REPORT_TTL_FACTOR = 3  # a report outlives three stats intervals, then the instance counts as gone


@dataclass(slots=True)
class Reporter:
    """Builds this instance's report from its metrics, as deltas since the previous one."""

    config: Config
    metrics: Metrics
    _previous: dict[str, tuple[float, float, list[tuple[float, float]]]] = field(
        default_factory=dict
    )
    _fingerprint: tuple[Config, str] | None = None  # the config's hash, once per config

    def report(
        self, now: float, inflight: dict[str, int], compliance: dict[str, float]
    ) -> dict[str, Any]:
        """Per class: in-flight, rate and p50/p99 since the previous report, SLA compliance."""
        finished = finished_by_class(self.metrics)
        classes: dict[str, Any] = {}
        for name in self.config.classes:
            done, buckets = finished.get(name, (0.0, []))
            then, done_before, buckets_before = self._previous.get(name, (now, done, buckets))
            before = dict(buckets_before)
            window = [(bound, count - before.get(bound, 0.0)) for bound, count in buckets]
            seconds = now - then
            classes[name] = {
                "inflight": inflight.get(name, 0),
                "rate": (done - done_before) / seconds if seconds > 0 else 0.0,
                "p50_s": quantile(window, 0.5),
                "p99_s": quantile(window, 0.99),
                "compliance": compliance.get(name, 1.0),
            }
            self._previous[name] = (now, done, buckets)
        return {"at": time.time(), "config": self._config_hash(), "classes": classes}

    def _config_hash(self) -> str:
        """The config's fingerprint, worked out again only when a reload replaced it."""
        if self._fingerprint is None or self._fingerprint[0] is not self.config:
            self._fingerprint = (self.config, self.config.fingerprint())
        return self._fingerprint[1]

    async def publish(
        self, redis: RedisClient, consumer: str, report: dict[str, Any], interval_s: float
    ) -> None:
        ttl_ms = int(interval_s * REPORT_TTL_FACTOR * 1000)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.instance(consumer), json.dumps(report), px=ttl_ms)
            pipe.zadd(keys.instances(), {consumer: time.time() * 1000})
            pipe.zremrangebyscore(keys.instances(), "-inf", time.time() * 1000 - 10 * ttl_ms)
            await pipe.execute()


async def read_reports(redis: RedisClient) -> dict[str, dict[str, Any]]:
    """The live instances' reports, by consumer name."""
    members: Any = await redis.zrange(keys.instances(), 0, -1)
    names = [member.decode() for member in members]
    if not names:
        return {}
    raw = await redis.mget([keys.instance(name) for name in names])
    return {name: json.loads(value) for name, value in zip(names, raw, strict=True) if value}


COLUMNS = (
    f"{'class':<27} {'lane':<6} {'mode':<6} {'conc':>4} {'infl':>5} {'backlog':>8} {'pending':>7} "
    f"{'delayed':>7} {'oldest':>7} {'rate/s':>8} {'p50ms':>7} {'p99ms':>7} {'sla':>7} {'dead':>5}"
)


def render(
    config: Config,
    stats: dict[str, StreamStats],
    reports: dict[str, dict[str, Any]],
    owners: dict[str, list[str | None]] | None = None,
) -> str:
    """The status table: one line per class, lanes in priority order; then who consumes each
    ordered class's partitions."""
    live = ", ".join(sorted(reports)) or "-"
    lines = [f"{len(reports)} instance(s) reporting: {live}"]
    configs = {name: str(report.get("config", "?")) for name, report in reports.items()}
    if len(set(configs.values())) > 1:  # two files, or one reloaded and one not
        said = ", ".join(f"{name} {digest}" for name, digest in sorted(configs.items()))
        lines.append(f"!! the instances run different configs: {said}; switchyard reload each")
    elif configs:
        lines[0] += f" (config {next(iter(configs.values()))})"
    lines.append(COLUMNS)
    for name, cls in config.classes_by_lane():
        mine = [r["classes"][name] for r in reports.values() if name in r.get("classes", {})]
        lines.append(_line(name, cls, stats.get(name, StreamStats()), mine))
    if owners:
        lines.append("ordered partitions, one consumer each:")
        lines += [_owners_line(name, holders) for name, holders in owners.items()]
    return "\n".join(lines)


def _owners_line(name: str, holders: list[str | None]) -> str:
    """`music.like_song   8 partitions: host-1-9f2c x4, host-2-77aa x4`, and how many have
    no owner (between an instance's death and the take-over)."""
    counts = Counter(holder for holder in holders if holder is not None)
    owned = ", ".join(f"{holder} x{count}" for holder, count in sorted(counts.items()))
    free = holders.count(None)
    line = f"  {name:<27} {len(holders):>4} partition(s): {owned or '-'}"
    return line + (f"; {free} unowned" if free else "")


async def read_owners(redis: RedisClient, config: Config) -> dict[str, list[str | None]]:
    """Per ordered class, the consumer holding each partition's lease (None: nobody now)."""
    owners: dict[str, list[str | None]] = {}
    for name, cls in config.classes.items():
        if cls.ordered:
            tags = keys.tags(name, cls.partitions)
            owners[name] = [_text(await redis.get(keys.owner(tag))) for tag in tags]
    return owners


def _line(name: str, cls: ClassConfig, stat: StreamStats, mine: Sequence[dict[str, Any]]) -> str:
    oldest = f"{time.time() - stat.oldest_ms / 1000:.1f}s" if stat.oldest_ms else "-"
    sla = _worst(mine, "compliance")
    sla_text = f"{sla * 100:.2f}%" if sla is not None and cls.sla else "-"
    inflight = sum(m["inflight"] for m in mine)
    rate = sum(m["rate"] for m in mine)
    return (
        f"{name:<27} {cls.lane:<6} {cls.mode:<6} {cls.concurrency:>4} {inflight:>5} "
        f"{stat.backlog:>8} {stat.pending:>7} {stat.delayed:>7} {oldest:>7} {rate:>8.1f} "
        f"{_ms(_worst(mine, 'p50_s', max))} {_ms(_worst(mine, 'p99_s', max))} "
        f"{sla_text:>7} {stat.dead_letters:>5}"
    )


def _worst(reports: Sequence[dict[str, Any]], name: str, pick: Any = min) -> float | None:
    values = [r[name] for r in reports if r.get(name) is not None]
    return pick(values) if values else None


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1000:7.1f}" if seconds is not None else f"{'-':>7}"


async def collect(redis: RedisClient, config: Config) -> str:
    """Everything `switchyard status` shows, read from Redis."""
    transport = RedisTransport(redis, config.redis.group, "switchyard-status")
    tags = [t for name, c in config.classes.items() for t in keys.tags(name, c.partitions)]
    stats = per_class(await transport.stats(tags))
    return render(config, stats, await read_reports(redis), await read_owners(redis, config))


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
