"""What the benchmarks share: cancellation-safe loops and clean-ups, the run's environment, the
in-process service's config head and counters, child processes, /proc readings, stream fills,
the bare loop's consumer, latency histograms with fine buckets, and percentiles.

Every child is started in its own session (so a terminal's Ctrl-C reaches only the suite, which
then stops it), with a parent-death signal (so a SIGKILLed suite leaves nothing behind), and is
stopped as a whole process group at the end of its `child()` block, whatever happened inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack
from prometheus_client import CollectorRegistry, Histogram

from bench.loadgen import make_event
from router import heap
from router.embedded.process import parent_death_hook, read_tail, signal_process
from router.metrics import Metrics, histogram_buckets, quantile
from router.streams import keys
from router.streams.client import connect
from router.streams.envelope import Envelope, new_event_id

if TYPE_CHECKING:  # the child processes (bench.paced, bench.flood) need not load the service
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    from redis.asyncio import Redis

    from router.service.service import Service

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PACKAGES = ("redis", "hiredis", "aiohttp", "msgpack", "prometheus-client", "structlog")

# 0.1 ms steps up to 5 ms, then coarser up to a minute: quantiles within 0.1 ms where it matters.
_COARSE_MS = (6, 7, 8, 9, 10, 12.5, 15, 17.5, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200, 300,
              500, 750, 1000, 2000, 3000, 5000, 10_000, 30_000, 60_000)  # fmt: skip
FINE_BUCKETS: tuple[float, ...] = tuple(
    sorted({round(step / 10_000, 6) for step in range(1, 51)} | {ms / 1000 for ms in _COARSE_MS})
)


class BenchError(RuntimeError):
    """An experiment that could not be measured (stalled, lost events, a child failed)."""


async def listening(port: int, timeout_s: float = 30.0) -> None:
    """Wait until a server without a "ready" line accepts connections on `port`; BenchError
    when it does not in `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise BenchError(f"nothing listens on port {port} after {timeout_s:g} s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def until(
    check_done: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.02
) -> None:
    """Poll `check_done` (another process's progress, read from Redis or a scrape) until true;
    BenchError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check_done():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


async def all_counted(
    count: Callable[[], float] | Callable[[], Awaitable[float]], expected: float, what: str
) -> None:
    """Until `count()` (read in place, or awaited) reaches `expected`: every accepted event
    acknowledged, say. A fixed pause instead would leave out the events later than the pause,
    and a late event must be counted late, not left out."""

    async def reached() -> bool:
        got = count()
        if inspect.isawaitable(got):
            got = await got
        return got >= expected

    await until(reached, 30.0, f"{expected:,.0f} {what}")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def checkpoint() -> None:
    """Raise CancelledError if this task was asked to stop, even if the request got lost.

    On Python 3.11, asyncio.wait_for() swallows a cancellation that arrives as its inner
    future completes, and redis-py (socket_timeout 5 s by default in 8.x) sends every command
    through wait_for; so a Ctrl-C landing on a Redis write can vanish. Loops call this.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def to_the_end(cleanup: Awaitable[None]) -> None:
    """Run a clean-up step to its end even when we are cancelled meanwhile, then re-raise.

    A Ctrl-C often lands in a clean-up step (Service.stop() waits up to block_ms for its
    readers); abandoning it half-way would leave pool tasks and connections behind.
    """
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


async def environment(admin: Redis) -> dict[str, Any]:
    """The machine, Python, redis-server and library versions, for the JSON output."""
    info = await admin.info("server")
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "redis_version": info.get("redis_version"),
        "packages": versions,
    }


# --- the service in this process ---


def config_head(name: str, url: str, group: str, *, http: bool, capacity: int | None = None) -> str:
    """The `service`, `redis` and `http` sections every in-process bench service shares
    (HTTP, when on, on 127.0.0.1 and a free port); a bench appends lanes, routes, classes."""
    lines = ["service:", f"  name: {name}", "  log_level: warning"]
    if capacity is not None:
        lines.append(f"  capacity: {capacity}")
    lines += ["redis:", f"  url: {url}", f"  group: {group}", "http:"]
    lines += ["  enabled: true", "  host: 127.0.0.1", "  port: 0"] if http else ["  enabled: false"]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running(service: Service) -> AsyncIterator[Service]:
    """Start the service; stop it on the way out, to the end even when cancelled."""
    try:
        await service.start()
        heap.settle()  # as `switchyard run` does once started
        yield service
    finally:
        await to_the_end(service.stop())


def processed(registry: CollectorRegistry, cls: str, outcome: str = "ok") -> float:
    """The service's own `switchyard_events_processed_total` for one class and outcome."""
    labels = {"class": cls, "outcome": outcome}
    return registry.get_sample_value("switchyard_events_processed_total", labels) or 0.0


# --- child processes ---


@contextlib.asynccontextmanager
async def child(
    *argv: str | Path,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    stdin: bool = True,
    stdout: bool = True,
    grace_s: float = 5.0,
    cwd: Path = PROJECT_ROOT,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a child in its own process group; on the way out stop the whole group.

    With `stdin`, closing it comes first (the line-protocol children take EOF as "stop");
    then SIGTERM, then SIGKILL, `grace_s` apart. stderr goes to `log` when given.
    """
    err: IO[bytes] | None = log.open("ab") if log is not None else None
    try:
        proc = await asyncio.create_subprocess_exec(
            *map(str, argv),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=parent_death_hook(),
        )
    finally:
        if err is not None:
            err.close()
    try:
        yield proc
    finally:
        await to_the_end(stop_group(proc, grace_s))


async def stop_group(proc: asyncio.subprocess.Process, grace_s: float = 5.0) -> None:
    """EOF on stdin (if it has a pipe), then SIGTERM, then SIGKILL to its process group."""
    steps: list[signal.Signals | None] = [signal.SIGTERM, signal.SIGKILL]
    if proc.stdin is not None:
        if not proc.stdin.is_closing():
            proc.stdin.close()
        steps.insert(0, None)
    for sig in steps:
        if proc.returncode is not None:
            break
        if sig is not None:
            signal_process(proc, sig, group=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=grace_s if sig != signal.SIGKILL else 10)
    signal_process(proc, signal.SIGKILL, group=True)  # anything it forked and left behind


async def read_line(proc: asyncio.subprocess.Process, timeout_s: float = 60.0) -> str:
    """The child's next stdout line; BenchError when it exits or says nothing in time."""
    assert proc.stdout is not None
    try:
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
    except TimeoutError:
        raise BenchError(f"child {proc.pid} said nothing for {timeout_s:.0f} s") from None
    if not raw:
        code = await proc.wait()
        raise BenchError(f"child {proc.pid} exited with code {code} before answering")
    return raw.decode().strip()


async def expect_ready(proc: asyncio.subprocess.Process, what: str) -> None:
    """Wait for the child's "ready" line (the line protocol's first); BenchError otherwise."""
    if (line := await read_line(proc)) != "ready":
        raise BenchError(f"{what} did not start: {line!r}")


async def say(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a child's log, for an error message."""
    return read_tail(path, lines)


# --- /proc ---


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) "


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group `pgid`."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == pgid:  # field 5: pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / CLOCK_TICKS


def rss_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a process in MB: resident now, and its peak so far."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    if len(found) < 2:
        return None
    return found["VmRSS"], found["VmHWM"]


# --- Redis ---


async def redis_cpu(admin: Redis) -> float:
    info = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def redis_calls(admin: Redis) -> dict[str, int]:
    stats = await admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_info")
    }


Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def bare_consume(
    consumer: Redis,
    stream: str,
    group: str,
    total: int | None,
    *,
    count: int = 200,
    on_acked: Callable[[Entries], None] | None = None,
) -> None:
    """The bare loop's consumer: XREADGROUP COUNT `count` (BLOCK 1 s), msgpack-decode field `e`
    of each entry, one XACK per read; `on_acked(entries)` right after the XACK's reply; until
    `total` entries were acknowledged (None: until cancelled)."""
    acked = 0
    while total is None or acked < total:
        checkpoint()
        reply: Any = await consumer.xreadgroup(group, "c", {stream: ">"}, count=count, block=1000)
        if not reply:
            continue
        entries: Entries = reply[0][1]
        for _, fields in entries:
            msgpack.unpackb(fields[b"e"])
        await consumer.xack(stream, group, *(entry for entry, _ in entries))
        acked += len(entries)
        if on_acked is not None:
            on_acked(entries)


_XADD_ALL = """
for i = 2, #ARGV do redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[i]) end
return #ARGV - 1
"""


def envelopes(cls: str, lane: str, start: int, count: int, topic: str = "bench/x") -> list[bytes]:
    """`count` encoded envelopes of music-like events, as ingest would store them."""
    now = time.time()
    return [
        Envelope(
            id=new_event_id(),
            cls=cls,
            lane=lane,
            payload=make_event(seq),
            source="bench",
            topic=topic,
            source_ts=now,
            ingest_ts=now,
        ).encode()
        for seq in range(start, start + count)
    ]


async def fill_stream(
    url: str,
    cls: str,
    lane: str,
    count: int,
    *,
    topic: str = "bench/x",
    chunk: int = 500,
    calls_per_trip: int = 10,
    tag: str | None = None,
) -> float:
    """Append `count` envelopes to a class stream (partition `tag` of it, when given), as
    ingest would store them; returns seconds. `url` may name a Redis Cluster.

    Server-side XADD loops (EVAL), a script call per `chunk`, several per round trip: about 4x
    pipelined XADDs. Writes the wire format directly (router.streams.keys), so it does not depend on
    Transport's publish signature.
    """
    redis = connect(url)
    started = time.perf_counter()
    try:
        stream = keys.stream(tag or cls)
        done = 0
        while done < count:
            checkpoint()
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(calls_per_trip):
                    size = min(chunk, count - done)
                    if size <= 0:
                        break
                    data = envelopes(cls, lane, done, size, topic)
                    pipe.eval(_XADD_ALL, 1, stream, keys.ENVELOPE_FIELD, *data)
                    done += size
                await pipe.execute()
    finally:
        await to_the_end(redis.aclose())
    return time.perf_counter() - started


async def group_progress(admin: Redis, cls: str, group: str) -> tuple[int, int]:
    """(entries processed, entries not yet delivered) of a class's consumer group.

    Processed = read by the group minus still pending (Redis 7's `entries-read` and `lag`).
    """
    groups: Any = await admin.xinfo_groups(keys.stream(cls))
    for entry in groups:
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
        name = fields.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            read = int(fields.get("entries-read") or 0)
            return read - int(fields.get("pending") or 0), int(fields.get("lag") or 0)
    return 0, 0


# --- latency ---


def refine_latency(metrics: Metrics) -> None:
    """Give the service's latency histograms fine buckets (0.1 ms steps up to 5 ms).

    The stock buckets jump from 1 to 2.5 ms, too coarse to read a p99 near 2 ms. Pools bind
    their histogram children when they are built, so call this before `Service.start()`.
    """
    registry = metrics.registry
    for old in (metrics.latency, metrics.queue_wait, metrics.source_latency):
        registry.unregister(old)
    labels = ["class", "lane"]
    metrics.latency = Histogram(
        "switchyard_event_latency_seconds",
        "Ingest to acknowledgement, end to end.",
        labels,
        buckets=FINE_BUCKETS,
        registry=registry,
    )
    metrics.queue_wait = Histogram(
        "switchyard_queue_wait_seconds",
        "Ingest to handler start.",
        labels,
        buckets=FINE_BUCKETS,
        registry=registry,
    )
    metrics.source_latency = Histogram(
        "switchyard_source_latency_seconds",
        "Source timestamp to acknowledgement, for events the source stamped.",
        labels,
        buckets=FINE_BUCKETS,
        registry=registry,
    )


Buckets = list[tuple[float, float]]


def buckets(registry: CollectorRegistry, name: str, cls: str) -> Buckets:
    return histogram_buckets(registry, name, {"class": cls})


def bucket_delta(after: Buckets, before: Buckets) -> Buckets:
    """The observations made between two readings of the same histogram."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def summarise_buckets(cumulative: Buckets, within_s: float | None = None) -> dict[str, Any]:
    """count, p50/p90/p99 (interpolated inside a bucket, like PromQL), the bound the maximum
    lies under, and the exact share of observations at or under `within_s` (a bucket bound)."""
    total = cumulative[-1][1] if cumulative else 0.0
    out: dict[str, Any] = {"count": int(total)}
    if not total:
        return out
    for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)):
        value = quantile(cumulative, q)
        out[name] = None if value is None else round(value * 1000, 3)
    bound = next(b for b, count in cumulative if count >= total)
    out["max_under_ms"] = None if math.isinf(bound) else round(bound * 1000, 3)
    if within_s is not None:
        at = next((count for b, count in cumulative if math.isclose(b, within_s)), None)
        out["share_within"] = None if at is None else round(at / total, 5)
    return out


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, Any]:
    """Exact nearest-rank p50/p90/p99 and the maximum, in ms (values in seconds)."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * scale

    return {
        "count": len(ordered),
        "p50_ms": round(rank(0.5), 3),
        "p90_ms": round(rank(0.9), 3),
        "p99_ms": round(rank(0.99), 3),
        "max_ms": round(ordered[-1] * scale, 3),
    }


def share_within(values: Sequence[float], within_s: float) -> float:
    """The share of `values` (seconds, at least one) at or under `within_s`."""
    return round(sum(1 for value in values if value <= within_s) / len(values), 5)


def machine_ticks() -> tuple[int, int] | None:
    """The whole machine's CPU time so far, in ticks: (stolen by the host, all); None where
    /proc/stat cannot be read."""
    try:
        with open("/proc/stat", "rb") as stat:  # a kernel counter: read at once, never waits
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


@dataclass
class Watch:
    """Wall and CPU time of this process, for 'CPU share' figures, and the machine's CPU time
    the host took meanwhile (a virtual machine's "steal"): a run's tail latency reads
    differently when the host took the CPU away for part of it."""

    wall: float = 0.0
    cpu: float = 0.0
    ticks: tuple[int, int] | None = None

    @classmethod
    def start(cls) -> Watch:
        ticks = machine_ticks()  # read first: the clocks start after it
        return cls(time.perf_counter(), time.process_time(), ticks)

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu

    def stolen_share(self) -> float | None:
        """The share of the machine's CPU time the host took since `start`."""
        now = machine_ticks()
        if now is None or self.ticks is None or now[1] <= self.ticks[1]:
            return None
        return round((now[0] - self.ticks[0]) / (now[1] - self.ticks[1]), 4)


@contextlib.asynccontextmanager
async def stall_watch(logs: Path, over_ms: float = 2.0) -> AsyncIterator[dict[str, Any]]:
    """`bench.stalls` beside the block: how often the machine held up an idle process by more
    than `over_ms`. The dict is filled on the way out."""
    found: dict[str, Any] = {}
    argv = (sys.executable, "-m", "bench.stalls", "--over-ms", str(over_ms))
    async with child(*argv, log=logs / "stalls.log") as watcher:
        await expect_ready(watcher, "stall watch")
        yield found
        await say(watcher, "stop")
        found.update(json.loads(await read_line(watcher)))


@dataclass(frozen=True)
class Gap:
    """A late wake of the loop probe: the wall time since the wake before it, and the CPU
    time this thread used in it (little of it: the process was not running)."""

    wall_s: float
    cpu_s: float


@dataclass
class LoopLag:
    """What the loop probe saw: each wake's lateness, and the wakes later than its `late_s`."""

    lags: list[float] = field(default_factory=list)
    late: list[Gap] = field(default_factory=list)


@contextlib.asynccontextmanager
async def loop_lag(every_s: float = 0.005, late_s: float = math.inf) -> AsyncIterator[LoopLag]:
    """Sample this event loop's lag during the block: how late a `sleep(every_s)` wakes up.

    In a process that runs a Service, that is how long a ready callback (a handler start, an
    ack) can wait behind the rest of the loop's work. A wake later than `late_s` is also kept
    as a `Gap`, with this thread's CPU time in it: busy, or not running at all.
    """
    found = LoopLag()

    async def probe() -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        while True:
            await asyncio.sleep(every_s)
            now, used = time.perf_counter(), time.thread_time()
            lag = max(0.0, now - wall - every_s)
            found.lags.append(lag)
            if lag > late_s:
                found.late.append(Gap(now - wall, used - cpu))
            wall, cpu = now, used

    task = asyncio.create_task(probe())
    try:
        yield found
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
