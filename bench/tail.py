"""Where a single-event POST's tail comes from: one paced run, every event's times kept.

    .venv/bin/python -m bench.tail [--rate 2000] [--seconds 10] [--late-ms 1.2] [--loop auto]
                                   [--nice N]

A private redis-server and a Service in this process (bench.latency's config, with an actor
that keeps each event's ingest and handler-start times), `bench.paced` POSTing one event per
request from a process of its own after a 1 s warm-up, and two probes meanwhile:
- a task in the service's loop that sleeps 1 ms at a time and notes its thread's CPU time:
  a wake over 2 ms late with little CPU spent in between means the process was not running,
  rather than busy with work of its own;
- `bench.stalls`, a process beside it that does the same with nothing else to do.

It prints how the late events (ingest to handler start over `--late-ms`) are spread: how
many events arrived in the 5 ms before each (a burst from the sender shows as more than the
pace), and how they cluster in time (a stall of the machine shows as a few clusters whose
first event waited longest). `--nice` runs the service at that niceness (below 0 needs
root), to see whether the scheduler's favour moves the tail.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import loop_lag, percentiles, progress, running, stall_watch
from bench.latency import LatencySettings, latency_config, post_paced
from bench.noop import Stamps
from bench.throughput import CLASS
from router import loops
from router.embedded.redis import EmbeddedRedis
from router.service.service import Service

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from bench.harness import Gap

WINDOW_S = 0.005  # arrivals counted before each event
CLUSTER_GAP_S = 0.010  # late events closer than this are one cluster
TICK_S = 0.001  # the loop probe's sleep
STALL_S = 0.002  # a probe wake this late is a stall


def arrivals_before(ingests: Sequence[float], at: float, window_s: float = WINDOW_S) -> int:
    """Events ingested in the `window_s` up to `at` (`ingests` sorted), `at`'s own included."""
    return bisect.bisect_right(ingests, at) - bisect.bisect_left(ingests, at - window_s)


def clusters(
    times: Sequence[tuple[float, float]], gap_s: float = CLUSTER_GAP_S
) -> list[list[tuple[float, float]]]:
    """(ingest, start) pairs in ingest order, split wherever `gap_s` passes between two."""
    found: list[list[tuple[float, float]]] = []
    for pair in sorted(times):
        if found and pair[0] - found[-1][-1][0] <= gap_s:
            found[-1].append(pair)
        else:
            found.append([pair])
    return found


async def measure(rate: float, seconds: float, late_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-tail-") as temp:
        logs = Path(temp)
        server = EmbeddedRedis(logs / "redis", appendonly=False)
        await server.start()
        try:
            settings = LatencySettings(rate=rate, seconds=seconds)
            config = latency_config(server.url, settings)
            stamped = config.classes[CLASS].model_copy(update={"actor": "bench.noop:Stamps"})
            config = config.model_copy(update={"classes": {CLASS: stamped}})
            async with running(Service(config, http_port=0)) as service:
                actor = service.pools[CLASS].actor
                assert isinstance(actor, Stamps)
                base = f"http://127.0.0.1:{service.http_port}"
                warm = await post_paced(base, settings, settings.warmup_seconds, 1, logs)
                await _handled(actor, warm["accepted"])
                actor.times.clear()
                probe = loop_lag(every_s=TICK_S, late_s=STALL_S)
                async with stall_watch(logs) as stalls, probe as loop:
                    sent = await post_paced(base, settings, seconds, 1, logs)
                await _handled(actor, sent["accepted"])
        finally:
            await server.stop()
    return summarise(actor.times, loop.late, stalls, sent, late_s)


async def _handled(actor: Stamps, accepted: int, timeout_s: float = 10.0) -> None:
    """Until the actor has started every event the service accepted."""
    async with asyncio.timeout(timeout_s):
        while len(actor.times) < accepted:
            await actor.started.wait()
            actor.started.clear()


def summarise(
    times: list[tuple[float, float]],
    gaps: list[Gap],
    stalls: dict[str, Any],
    sent: dict[str, Any],
    late_s: float,
) -> dict[str, Any]:
    waits = percentiles([start - ingest for ingest, start in times])
    late = [(ingest, start) for ingest, start in times if start - ingest > late_s]
    ingests = sorted(ingest for ingest, _ in times)
    grouped = clusters(late)
    firsts = [group[0][1] - group[0][0] for group in grouped]
    return {
        "events": len(times),
        "sent": sent["sent"],
        "sender_busiest_5ms": sent["busiest_5ms"],
        "p50_ms": waits.get("p50_ms"),
        "p99_ms": waits.get("p99_ms"),
        "late": len(late),
        "arrivals_median_all": _median(arrivals_before(ingests, i) for i, _ in times),
        "arrivals_median_late": _median(arrivals_before(ingests, i) for i, _ in late),
        "clusters": len(grouped),
        "cluster_first_wait_median_ms": _median(f * 1000 for f in firsts),
        "cluster_first_wait_max_ms": round(max(firsts, default=0.0) * 1000, 3),
        "loop_gaps": len(gaps),
        "loop_gap_wall_ms": round(sum(g.wall_s for g in gaps) * 1000, 1),
        "loop_gap_cpu_ms": round(sum(g.cpu_s for g in gaps) * 1000, 1),
        "idle_process": stalls,
    }


def _median(values: Iterable[float]) -> float | None:
    found = list(values)
    return round(statistics.median(found), 3) if found else None


def print_summary(result: dict[str, Any], rate: float, late_ms: float) -> None:
    idle = result["idle_process"]
    print(f"{result['events']:,} events of {result['sent']:,} at {rate:,.0f}/s, one per POST: "
          f"ingest -> handler start p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
          f"{result['late']} over {late_ms:g} ms")  # fmt: skip
    print(f"  arrivals in the 5 ms up to an event, median: {result['arrivals_median_all']} for "
          f"all, {result['arrivals_median_late']} for the late ones (pace {rate * WINDOW_S:g}; "
          f"the sender sent at most {result['sender_busiest_5ms']} in 5 ms)")  # fmt: skip
    print(f"  the late ones in {result['clusters']} clusters (10 ms apart or more); the first "
          f"event of each waited {result['cluster_first_wait_median_ms']} ms (median), "
          f"{result['cluster_first_wait_max_ms']} ms at most")  # fmt: skip
    print(f"  the service's loop woke over 2 ms late {result['loop_gaps']} times; those gaps "
          f"lasted {result['loop_gap_wall_ms']:g} ms in all, of which its thread ran "
          f"{result['loop_gap_cpu_ms']:g} ms (the rest, the process was not running)")  # fmt: skip
    print(f"  an idle process beside it woke over 2 ms late {idle['stalls']} times, "
          f"{idle['stalled_ms']:g} ms in all, {idle['worst_ms']:g} ms at worst")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tail", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--rate", type=float, default=2_000.0, help="events (POSTs) per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--late-ms", type=float, default=1.2,
                        help="ingest -> handler start over this is late")  # fmt: skip
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--nice", type=int, help="the service's niceness (default: as started)")
    args = parser.parse_args(argv)
    if args.nice is not None:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    measuring = measure(args.rate, args.seconds, args.late_ms / 1000)
    result = loops.run(measuring, loops.factory(args.loop))
    progress("")
    print_summary(result, args.rate, args.late_ms)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
