"""Clinic board benchmark: what working out the lead's board costs, for a day of N visits.

    .venv/bin/python -m bench.clinic_board [--visits 2000 20000] [--repeat 5] [--quick]

One command starts a private redis-server and, for each day size, writes that many visits
as the stations write them (the day's index, each visit's record: a patient screened,
registered at one of 4 desks, vaccinated at one of 6 stations, observed, most departed),
then times, median of `--repeat`:

  bare     the floor: the day's index and every visit record read back (HGETALL, pipelined)
  poll     what one poll of `/clinic/board` costs: the board, summary, observation and
           attention answers together (they share one reading of the day), by a fresh
           provider each run, so nothing is cached
  gauges   the Prometheus gauges, refreshed every 5 s whoever scrapes (a fresh provider too)
and Redis memory per visit. The page polls every 2 s; the board's cost is per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from actors.api import Query
from actors.clinic.analytics import ClinicAnalytics
from bench.harness import progress
from router.config import load_config
from router.embedded.redis import EmbeddedRedis
from router.ops.lookups import RedisLookups
from router.streams import keys
from router.streams.redis import RedisTransport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
DAY_S = 10 * 3600  # the clinic's opening hours


def visit(number: int, opened: float, visits: int) -> dict[str, str | float]:
    """One visit's record as the stations leave it, spread over the day."""
    arrived = opened + DAY_S * number / visits
    steps = {
        "arrived_at": arrived, "screened_at": arrived + 40,
        "registration_started_at": arrived + 120, "registered_at": arrived + 300,
        "vaccination_started_at": arrived + 420, "vaccinated_at": arrived + 720,
        "observation_started_at": arrived + 730, "observation_ends_at": arrived + 1630,
    }  # fmt: skip
    record: dict[str, str | float] = {
        "visit_id": f"v{number:07d}", "patient_id": f"P{number:07d}", "temperature_c": 36.8,
        "screening": "passed", "registration_desk": f"desk-{number % 4 + 1}",
        "vaccination_station": f"station-{number % 6 + 1}", "nurse": "A. Okafor",
        "vaccine": "influenza-2026", "lot": "FL26-0412", **steps,
    }  # fmt: skip
    if number < visits * 0.9:  # most have left
        record |= {"departed_at": arrived + 1640, "outcome": "vaccinated", "visit_s": 1640.0}
    return record


async def fill(redis: Redis, visits: int, opened: float) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(opened))
    async with redis.pipeline(transaction=False) as pipe:
        for number in range(visits):
            record = visit(number, opened, visits)
            pipe.hset(keys.record("clinic", f"visit:v{number:07d}"), mapping=record)  # type: ignore[arg-type]
            pipe.hset(keys.record("clinic", f"day:{day}"), f"v{number:07d}", f"P{number:07d}")
        await pipe.execute()


async def bare(redis: Redis, opened: float) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(opened))
    index: Any = await redis.hgetall(keys.record("clinic", f"day:{day}"))
    async with redis.pipeline(transaction=False) as pipe:
        for name in index:
            pipe.hgetall(keys.record("clinic", f"visit:{name.decode()}"))
        await pipe.execute()


def fresh(lookups: RedisLookups) -> ClinicAnalytics:
    """A provider with nothing read yet."""
    provider = ClinicAnalytics(desks=4, stations=6)
    provider.bind(lookups)
    return provider


async def poll(lookups: RedisLookups) -> None:
    provider = fresh(lookups)
    questions = ("board", "summary", "observation", "attention")
    await asyncio.gather(*(provider.answer(q, Query()) for q in questions))


async def timed(work: Callable[[], Awaitable[Any]], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


async def measure(sizes: Sequence[int], repeat: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="switchyard-clinic-") as temp:
        server = EmbeddedRedis(Path(temp) / "redis", appendonly=False)
        await server.start()
        redis = Redis.from_url(server.url)
        config = load_config(REPO / "config.yaml", environ={"SWITCHYARD_REDIS_URL": server.url})
        lookups = RedisLookups(
            redis, RedisTransport(redis, "switchyard", "bench"), config, "clinic"
        )
        try:
            for visits in sizes:
                await redis.flushall()  # the private server this command started
                opened = time.time() - DAY_S  # the day is over, or nearly
                before = int((await redis.info("memory"))["used_memory"])
                progress(f"{visits:,} visits: writing them")
                await fill(redis, visits, opened)
                after = int((await redis.info("memory"))["used_memory"])
                progress(f"{visits:,} visits: timing the board")
                floor = await timed(functools.partial(bare, redis, opened), repeat)
                board = await timed(functools.partial(poll, lookups), repeat)
                gauges = await timed(lambda: fresh(lookups).gauges(), repeat)
                results.append({
                    "visits": visits, "bytes_per_visit": (after - before) / visits,
                    "bare_s": floor, "poll_s": board, "gauges_s": gauges,
                    "poll_vs_bare": board / floor, "gauges_vs_bare": gauges / floor,
                })  # fmt: skip
        finally:
            await redis.aclose()
            await server.stop()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.clinic_board", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--visits", type=int, nargs="+", default=[2_000, 20_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 visits, 3 runs")
    args = parser.parse_args(argv)
    sizes, repeat = ([2_000], 3) if args.quick else (args.visits, args.repeat)
    results = asyncio.run(measure(sizes, repeat))
    print(json.dumps(results, indent=2))
    for r in results:
        print(
            f"{r['visits']:,} visits ({r['bytes_per_visit']:.0f} B each in Redis): a poll of the "
            f"board in {r['poll_s'] * 1000:.0f} ms (x{r['poll_vs_bare']:.2f} reading the records "
            f"bare, {r['bare_s'] * 1000:.0f} ms), the gauges in {r['gauges_s'] * 1000:.0f} ms "
            f"(x{r['gauges_vs_bare']:.2f})",
            file=sys.stdout,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
