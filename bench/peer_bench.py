"""Switchyard beside Dramatiq, Celery, arq and taskiq-redis, on the same private Redis.

Drain (throughput): N no-op tasks are enqueued first (not timed); then one worker process is
started and the drain is timed from the first finished task to the last, read off a counter in
Redis that the tasks bump (batched: see bench/peers/common.py). Switchyard's row is measured the
same way: N envelopes pre-filled into a class stream, a Service started, first to last event.

Priority: a low-priority backlog, one worker, then high-priority tasks at a fixed rate, each
carrying its enqueue time; the task notes enqueue-to-start. Celery (Redis priorities) and
Dramatiq (actor priority) only: arq and taskiq-redis have no priorities.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from bench.harness import (
    BenchError,
    checkpoint,
    child,
    fill_stream,
    group_cpu_seconds,
    log_tail,
    percentiles,
    processed,
    progress,
    redis_calls,
    redis_cpu,
    to_the_end,
)
from bench.throughput import CLASS, service_config
from router.service.service import Service

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from redis.asyncio import Redis

DONE_KEY = "bench:peers:done"  # as in bench/peers/common.py
HIGH_KEY = "bench:peers:high"
POLL_S = 0.002
STALL_S = 30.0


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    module: str
    setup: str  # how its worker runs, for the table and the JSON
    env: Mapping[str, str] = field(default_factory=dict)
    priorities: bool = False


PEERS = (
    Peer(
        "dramatiq",
        "Dramatiq (Redis broker)",
        "bench.peers.dramatiq_peer",
        "1 process x 8 threads",
        priorities=True,
    ),
    Peer(
        "celery",
        "Celery (Redis broker)",
        "bench.peers.celery_peer",
        "solo pool: 1 process, no result backend",
        priorities=True,
    ),
    Peer(
        "arq",
        "arq",
        "bench.peers.arq_peer",
        "1 worker, max_jobs 100, poll_delay 5 ms, keep_result 0",
    ),
    Peer(
        "taskiq-stream",
        "taskiq-redis RedisStreamBroker",
        "bench.peers.taskiq_peer",
        "1 worker, 100 async tasks, XACK per message",
        {"BENCH_TASKIQ_BROKER": "stream"},
    ),
    Peer(
        "taskiq-list",
        "taskiq-redis ListQueueBroker",
        "bench.peers.taskiq_peer",
        "1 worker, 100 async tasks, no acks",
        {"BENCH_TASKIQ_BROKER": "list"},
    ),
)


@dataclass(frozen=True)
class Context:
    """What a peer experiment needs: the private server, the peers' python, a log directory."""

    url: str
    admin: Redis
    python: Path
    logs: Path

    def env(self, peer: Peer, *, priority: bool = False) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": self.url,
            "BENCH_PEER_PRIORITY": "1" if priority else "0",
            "PYTHONUNBUFFERED": "1",
            **peer.env,
        }


async def _role(ctx: Context, peer: Peer, *args: str, priority: bool = False) -> dict[str, Any]:
    """Run a short role (fill, paced) to its end; its last stdout line is JSON."""
    log = ctx.logs / f"{peer.name}-{args[0]}.log"
    async with child(
        ctx.python, "-m", peer.module, *args,
        env=ctx.env(peer, priority=priority), log=log, stdin=False,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        out = await proc.stdout.read()
        code = await proc.wait()
    if code != 0:
        raise BenchError(f"{peer.name} {args[0]} exited with {code}:\n{log_tail(log)}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def _counter(admin: Redis) -> int:
    value = await admin.get(DONE_KEY)
    return int(value or 0)


# --- drain ---


async def drain_peer(ctx: Context, peer: Peer, tasks: int) -> dict[str, Any]:
    """Enqueue `tasks` no-op tasks, start one worker, time the drain (first to last task)."""
    admin = ctx.admin
    await admin.flushall()
    filled = await _role(ctx, peer, "fill", "--count", str(tasks))
    await admin.config_resetstat()
    cpu_redis = await redis_cpu(admin)
    log = ctx.logs / f"{peer.name}-worker.log"
    spawned = time.perf_counter()
    async with child(
        ctx.python,
        "-m",
        peer.module,
        "worker",
        env=ctx.env(peer),
        log=log,
        stdin=False,
        stdout=False,
    ) as worker:
        first: tuple[float, int, float] | None = None  # (time, count, worker cpu) at the first
        last_count, last_change, polls = 0, spawned, 0
        while True:
            checkpoint()
            now = time.perf_counter()
            done = await _counter(admin)
            polls += 1
            if done and first is None:
                first = (now, done, group_cpu_seconds(worker.pid))
            if done >= tasks:
                break
            if done != last_count:
                last_count, last_change = done, now
            elif now - last_change > STALL_S:
                raise BenchError(
                    f"{peer.name}: no progress for {STALL_S:.0f} s at {done}/{tasks}"
                    f"\n{log_tail(log)}"
                )
            if worker.returncode is not None:
                raise BenchError(f"{peer.name} worker exited early:\n{log_tail(log)}")
            await asyncio.sleep(POLL_S)
        finished = time.perf_counter()
        worker_cpu = group_cpu_seconds(worker.pid) - first[2] if first else 0.0
    calls = await redis_calls(admin)
    assert first is not None
    counted = tasks - first[1]
    seconds = finished - first[0]
    return {
        "peer": peer.name,
        "label": peer.label,
        "setup": peer.setup,
        "tasks": tasks,
        "enqueue_seconds": round(filled["seconds"], 4),
        "enqueue_per_s": round(tasks / filled["seconds"], 1),
        "startup_seconds": round(first[0] - spawned, 4),
        "drain_seconds": round(seconds, 4),
        "events_per_s": round(counted / seconds, 1) if seconds > 0 else None,
        "cpu_us_per_task": round(worker_cpu / counted * 1e6, 1) if counted else None,
        "redis_cpu_us_per_task": round((await redis_cpu(admin) - cpu_redis) / tasks * 1e6, 1),
        # Less this bench's own: its GET polls of the counter and the tally's INCRBYs.
        "redis_calls_per_task": round(
            (sum(n for name, n in calls.items() if name != "incrby") - polls) / tasks, 2
        ),
    }


async def drain_switchyard(url: str, admin: Redis, events: int, concurrency: int) -> dict[str, Any]:
    """Switchyard measured like the peers: pre-filled stream, start, first to last event."""
    await admin.flushall()
    filled = await fill_stream(url, CLASS, "bench", events)
    registry = CollectorRegistry()
    service = Service(service_config(url, concurrency, http=False), registry=registry)
    await admin.config_resetstat()
    cpu_redis = await redis_cpu(admin)
    try:
        spawned, cpu_spawned = time.perf_counter(), time.process_time()
        await service.start()
        first: tuple[float, float, float] | None = None
        while (done := processed(registry, CLASS)) < events:
            checkpoint()
            if done and first is None:
                first = (time.perf_counter(), done, time.process_time())
            await asyncio.sleep(POLL_S)
            if time.perf_counter() - spawned > STALL_S + events / 1000:
                raise BenchError(f"switchyard drain stalled at {done:.0f}/{events}")
        finished, cpu_end = time.perf_counter(), time.process_time()
    finally:
        await to_the_end(service.stop())
    calls = await redis_calls(admin)
    if first is None:  # drained between two polls: count it all, start-up included
        first = (spawned, 0.0, cpu_spawned)
    counted = events - first[1]
    seconds = finished - first[0]
    return {
        "peer": "switchyard",
        "label": "Switchyard consume only",
        "setup": f"1 process, queue mode, concurrency {concurrency}",
        "tasks": events,
        "enqueue_seconds": round(filled, 4),
        "enqueue_per_s": round(events / filled, 1),
        "startup_seconds": round(first[0] - spawned, 4),
        "drain_seconds": round(seconds, 4),
        "events_per_s": round(counted / seconds, 1) if seconds > 0 else None,
        "cpu_us_per_task": round((cpu_end - first[2]) / counted * 1e6, 1) if counted else None,
        "redis_cpu_us_per_task": round((await redis_cpu(admin) - cpu_redis) / events * 1e6, 1),
        "redis_calls_per_task": round(sum(calls.values()) / events, 2),
    }


async def drain_all(
    ctx: Context | None,
    url: str,
    admin: Redis,
    tasks: int,
    *,
    switchyard_runs: int,
    peer_runs: int,
    concurrency: int,
) -> dict[str, Any]:
    """Every peer (when `ctx`), then Switchyard measured the same way; medians of the runs."""
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for peer in PEERS if ctx is not None else ():
        assert ctx is not None
        runs = []
        for number in range(peer_runs):
            checkpoint()
            try:
                runs.append(await drain_peer(ctx, peer, tasks))
            except BenchError as exc:
                errors[peer.name] = str(exc)
                progress(f"peer {peer.name} failed: {exc}")
                break
            progress(f"peer {peer.name} run {number + 1}/{peer_runs}: {_brief(runs[-1])}")
        if runs:
            rows.append(_median_row(runs))
    runs = []
    for number in range(switchyard_runs):
        checkpoint()
        runs.append(await drain_switchyard(url, admin, tasks, concurrency))
        progress(f"switchyard run {number + 1}/{switchyard_runs}: {_brief(runs[-1])}")
    rows.append(_median_row(runs))
    return {"tasks": tasks, "rows": rows, "errors": errors}


def _brief(row: dict[str, Any]) -> str:
    return (
        f"{row['events_per_s']:,.0f}/s, {row['cpu_us_per_task']} us CPU/task, "
        f"startup {row['startup_seconds']:.2f} s, enqueue {row['enqueue_per_s']:,.0f}/s"
    )


def _median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run nearest the median rate, with the median rate and every run's rate."""
    rates = [r["events_per_s"] or 0.0 for r in runs]
    median = statistics.median(rates)
    row = dict(min(runs, key=lambda r: abs((r["events_per_s"] or 0.0) - median)))
    row["runs_events_per_s"] = rates
    row["events_per_s"] = round(median, 1)
    return row


# --- priority ---


async def priority_peer(
    ctx: Context, peer: Peer, *, backlog: int, rate: float, seconds: float, settle_s: float
) -> dict[str, Any]:
    """Low-priority backlog, one worker, high-priority tasks at `rate` for `seconds`."""
    admin = ctx.admin
    await admin.flushall()
    filled = await _role(ctx, peer, "fill", "--count", str(backlog), priority=True)
    progress(f"{peer.name}: {backlog:,} low-priority tasks enqueued in {filled['seconds']:.1f} s")
    log = ctx.logs / f"{peer.name}-priority-worker.log"
    async with child(
        ctx.python, "-m", peer.module, "worker",
        env=ctx.env(peer, priority=True), log=log, stdin=False, stdout=False,
    ):  # fmt: skip
        started = time.perf_counter()
        while await _counter(admin) == 0:
            checkpoint()
            if time.perf_counter() - started > STALL_S:
                raise BenchError(f"{peer.name} worker did not start:\n{log_tail(log)}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # steady state
        low_before, window = await _counter(admin), time.perf_counter()
        paced = await _role(
            ctx, peer, "paced", "--rate", str(rate), "--seconds", str(seconds), priority=True
        )
        window_s = time.perf_counter() - window
        low_after = await _counter(admin)
        # What is still queued behind the backlog gets `settle_s` more to start.
        deadline = time.perf_counter() + settle_s
        while await admin.llen(HIGH_KEY) < paced["sent"] and time.perf_counter() < deadline:
            checkpoint()
            await asyncio.sleep(0.05)
        waited = time.perf_counter() - window - window_s
    latencies = [float(v) for v in await admin.lrange(HIGH_KEY, 0, -1)]
    return {
        "peer": peer.name,
        "label": peer.label,
        "setup": peer.setup,
        "backlog": backlog,
        "high_rate": rate,
        "seconds": seconds,
        "high_sent": paced["sent"],
        "high_started": len(latencies),
        "high_not_started": paced["sent"] - len(latencies),
        "waited_after_window_s": round(waited, 2),
        "latency": percentiles(latencies),
        "latency_measured": "enqueue (time.time() in the sender) to task start",
        "low_per_s_during": round((low_after - low_before) / window_s, 1),
        "low_left_at_end": backlog - low_after,
        "sender_late_max_ms": paced.get("late_max_ms"),
    }
