"""Throughput benchmark: Switchyard against a bare redis.asyncio loop on the same private Redis.

    .venv/bin/python -m bench.throughput [--events N] [--runs 3] [--json out.json] [--quick]
                                         [--profile DIR]

One command starts a private redis-server (EmbeddedRedis, appendonly off, in a temp dir, on a
free port; never the machine's 6379), runs every scenario `--runs` times interleaved, prints
medians as a table, and stops everything it started, also on Ctrl-C or SIGTERM.

Scenarios (see bench/README.md for what each figure means):
  baseline    one process: pipelined XADD (200 per pipeline) into one stream, concurrently
              XREADGROUP COUNT 200 + msgpack decode + one XACK per batch; first XADD to last XACK
  switchyard  Service in this process (HTTP on a free port, one queue-mode class with a no-op
              actor); a load generator in a separate process (bench.loadgen) posts JSON arrays
              to POST /events/bench/x; "go" to the moment the service counted N events processed
  consume     the same Service without HTTP, its stream pre-filled with N envelopes; service
              start to N processed: the pool's read/dispatch/handle/ack path on its own
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import pstats
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bench.harness import (
    PROJECT_ROOT,
    BenchError,
    bare_consume,
    checkpoint,
    child,
    config_head,
    environment,
    expect_ready,
    fill_stream,
    processed,
    progress,
    read_line,
    redis_calls,
    redis_cpu,
    running,
    say,
    to_the_end,
)
from bench.loadgen import make_event
from router import heap, loops
from router.config import Config, parse_config
from router.embedded.redis import EmbeddedRedis
from router.logs import configure_logging
from router.service.service import Service

CLASS = "bench.noop"
TOPIC = "bench/x"
GROUP = "bench"
BASELINE_STREAM = "bench:{baseline}:stream"
POLL_S = 0.01  # how often the service's processed counter is read
STALL_S = 30.0  # no progress for this long fails the run
WARMUP_EVENTS = 5_000

DESCRIPTIONS = {
    "baseline": "bare redis.asyncio loop, 1 process",
    "switchyard": "Switchyard e2e: HTTP > XADD > pool > XACK",
    "accept": "  of which: all POSTs answered 202",
    "consume": "Switchyard consume only: pool > XACK",
}


@dataclass(frozen=True)
class Settings:
    events: int = 100_000
    runs: int = 3
    scenarios: tuple[str, ...] = ("baseline", "switchyard", "consume")
    post_batch: int = 500  # events per HTTP body
    connections: int = 8  # concurrent POSTs
    concurrency: int = 256  # the bench class's pool concurrency
    xadd_pipeline: int = 200  # baseline: XADDs per pipeline
    read_count: int = 200  # baseline: XREADGROUP COUNT
    event_ids: bool = False  # switchyard: events carry an event_id (de-duplicated on arrival)
    warmup: bool = True
    profile_dir: Path | None = None


@dataclass
class Sample:
    """One measured run of one scenario.

    `cpu_us` is this process's CPU time per event during the timed window (for the Switchyard
    scenarios: the service's, as the load generator is another process); `redis_cpu_us` is
    redis-server's; `redis_calls` counts Redis commands in the window, by command.
    """

    scenario: str
    events: int
    seconds: float
    cpu_us: float | None = None
    redis_cpu_us: float | None = None
    redis_calls: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    gc_ms: float | None = None  # this process's time in the garbage collector


@dataclass
class Window:
    """What a timed window cost: wall seconds, CPU seconds here and in Redis, Redis commands."""

    seconds: float = 0.0
    cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    redis_calls: dict[str, int] = field(default_factory=dict)
    gc_s: float = 0.0

    def sample(self, scenario: str, events: int, **extra: Any) -> Sample:
        return Sample(
            scenario,
            events,
            self.seconds,
            cpu_us=round(self.cpu_s / events * 1e6, 2),
            redis_cpu_us=round(self.redis_cpu_s / events * 1e6, 2),
            redis_calls=self.redis_calls,
            extra=extra,
            gc_ms=round(self.gc_s * 1000, 1),
        )


class CollectorTime:
    """How long the garbage collector ran in this process while it was counting."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def __enter__(self) -> CollectorTime:
        gc.callbacks.append(self._on_collection)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began


@dataclass(frozen=True)
class Run:
    """What every scenario runner gets: the private server and the settings."""

    url: str
    admin: Redis
    settings: Settings
    profiler: cProfile.Profile | None = None


@contextlib.asynccontextmanager
async def measured(run: Run) -> AsyncIterator[Window]:
    """Time the body: wall clock, this process's CPU, redis-server's CPU and its commands."""
    window = Window()
    await run.admin.config_resetstat()
    redis_before = await redis_cpu(run.admin)
    cpu, started = time.process_time(), time.perf_counter()
    with _profiling(run.profiler), CollectorTime() as collector:
        yield window
    window.gc_s = collector.seconds
    window.seconds = time.perf_counter() - started
    window.cpu_s = time.process_time() - cpu
    window.redis_cpu_s = await redis_cpu(run.admin) - redis_before
    window.redis_calls = await redis_calls(run.admin)


# --- scenarios ---


async def run_baseline(run: Run, events: int) -> list[Sample]:
    """Producer and consumer tasks in one event loop, each on its own connection."""
    settings = run.settings
    producer, consumer = Redis.from_url(run.url), Redis.from_url(run.url)
    try:
        await consumer.xgroup_create(BASELINE_STREAM, GROUP, id="0", mkstream=True)
        payloads = [make_event(seq) for seq in range(events)]

        async def produce() -> None:
            step = settings.xadd_pipeline
            for start in range(0, events, step):
                checkpoint()
                async with producer.pipeline(transaction=False) as pipe:
                    for payload in payloads[start : start + step]:
                        pipe.xadd(BASELINE_STREAM, {"e": msgpack.packb(payload)})
                    await pipe.execute()

        await producer.ping()  # both connections open before the clock starts
        await consumer.ping()
        async with (
            measured(run) as window,
            asyncio.timeout(STALL_S + events / 1000),
            asyncio.TaskGroup() as group,
        ):
            group.create_task(produce())
            group.create_task(
                bare_consume(consumer, BASELINE_STREAM, GROUP, events, count=settings.read_count)
            )
        return [window.sample("baseline", events)]
    finally:
        await producer.aclose()
        await consumer.aclose()


async def run_switchyard(run: Run, events: int) -> list[Sample]:
    """HTTP load from a separate process into a Service running in this one."""
    registry = CollectorRegistry()
    config = service_config(run.url, run.settings.concurrency, http=True)
    async with (
        running(Service(config, registry=registry)) as service,
        _load_generator(service.http_port, run.settings, events) as generator,
    ):
        await expect_ready(generator, "load generator")
        result_task = asyncio.create_task(read_line(generator, STALL_S + events / 1000))
        try:
            async with measured(run) as window:
                await say(generator, "go")
                await _wait_processed(registry, events, result_task)
            result = json.loads(await asyncio.wait_for(result_task, STALL_S))
        finally:
            result_task.cancel()
    return [
        window.sample(
            "switchyard",
            events,
            posts=result["posts"],
            http_503=result["retries"],
            generator_cpu_us=round(result["cpu_seconds"] / events * 1e6, 2),
        ),
        Sample("accept", events, float(result["accept_seconds"])),
    ]


async def run_consume(run: Run, events: int) -> list[Sample]:
    """A pre-filled class stream drained by a Service without HTTP."""
    await fill_stream(run.url, CLASS, "bench", events, topic=TOPIC)  # not timed
    registry = CollectorRegistry()
    service = Service(
        service_config(run.url, run.settings.concurrency, http=False), registry=registry
    )
    try:
        async with measured(run) as window:
            await service.start()
            heap.settle()  # as `switchyard run` does once started (once per process)
            await _wait_processed(registry, events, None)
    finally:
        await to_the_end(service.stop())
    return [window.sample("consume", events)]


def service_config(redis_url: str, concurrency: int, *, http: bool) -> Config:
    """One lane, one queue-mode class with a no-op actor, every `bench/...` topic routed to it."""
    text = (
        config_head("bench", redis_url, GROUP, http=http)
        + f"""\
lanes:
  - name: bench
routes:
  - name: bench
    topic: bench/#
    class: {CLASS}
classes:
  {CLASS}:
    lane: bench
    actor: bench.noop:NoOp
    mode: queue
    concurrency: {concurrency}
"""
    )
    return parse_config(text, "<bench>", environ={})


# --- helpers ---


def _load_generator(
    port: int, settings: Settings, events: int
) -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """bench.loadgen in its own process group; on the way out: EOF (abort), SIGTERM, SIGKILL."""
    return child(
        sys.executable, "-m", "bench.loadgen",
        "--url", f"http://127.0.0.1:{port}",
        "--topic", TOPIC,
        "--events", str(events),
        "--batch", str(settings.post_batch),
        "--connections", str(settings.connections),
        *(["--event-ids"] if settings.event_ids else []),
    )  # fmt: skip


async def _wait_processed(
    registry: CollectorRegistry, events: int, generator_result: asyncio.Task[str] | None
) -> None:
    """Poll the service's own counter until `events` were processed; fail on stall or loss."""
    last, last_change = -1.0, time.perf_counter()
    while (done := processed(registry, CLASS)) < events:
        checkpoint()
        if generator_result is not None and generator_result.done():
            line = generator_result.result()
            result: dict[str, Any] = (
                json.loads(line) if line.startswith("{") else {"accepted": 0, "errors": [line]}
            )
            if result["accepted"] < events:
                raise BenchError(
                    f"load generator got {result['accepted']}/{events} accepted: {result['errors']}"
                )
        now = time.perf_counter()
        if done != last:
            last, last_change = done, now
        elif now - last_change > STALL_S:
            raise BenchError(f"no progress for {STALL_S}s at {done:.0f}/{events} processed")
        await asyncio.sleep(POLL_S)
    if dead := processed(registry, CLASS, "dead"):
        raise BenchError(f"{dead:.0f} events dead-lettered: the no-op actor should never fail")


@contextlib.contextmanager
def _profiling(profiler: cProfile.Profile | None) -> Iterator[None]:
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


# --- orchestration ---

Runner = Callable[[Run, int], Awaitable[list[Sample]]]
RUNNERS: dict[str, Runner] = {
    "baseline": run_baseline,
    "switchyard": run_switchyard,
    "consume": run_consume,
}


async def bench(settings: Settings) -> tuple[list[Sample], dict[str, Any]]:
    """Start the private Redis, run every scenario `runs` times interleaved, stop Redis."""
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        await server.start()
        admin = Redis.from_url(server.url)
        try:
            env = await environment(admin)
            env["settings"] = {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()
            }
            progress(f"private redis-server {env['redis_version']} at {server.url}")
            run = Run(server.url, admin, settings)
            samples = await run_scenarios(run)
            if settings.profile_dir is not None:
                env["profiles"] = await _profile(run)
        finally:
            await to_the_end(admin.aclose())
            await to_the_end(server.stop())
    return samples, env


async def run_scenarios(run: Run) -> list[Sample]:
    """The warm-up round, then every scenario `runs` times interleaved, on `run`'s server.

    Empties the server (FLUSHALL) before every run. bench.suite calls this on its own server.
    """
    settings, admin = run.settings, run.admin
    samples: list[Sample] = []
    if settings.warmup:
        for name in settings.scenarios:
            checkpoint()
            await admin.flushall()
            await RUNNERS[name](run, min(settings.events, WARMUP_EVENTS))
        progress("warm-up done")
    for number in range(1, settings.runs + 1):
        for name in settings.scenarios:
            checkpoint()
            await admin.flushall()
            for sample in await RUNNERS[name](run, settings.events):
                samples.append(sample)
                progress(f"run {number}/{settings.runs} {_describe(sample)}")
    return samples


def _describe(sample: Sample) -> str:
    text = (
        f"{sample.scenario:<10} {sample.seconds:7.3f} s {sample.events / sample.seconds:>9,.0f}/s"
    )
    if sample.cpu_us is not None:
        text += f"  cpu {sample.cpu_us:5.1f} us/event, redis {sample.redis_cpu_us:4.1f} us/event"
    if sample.gc_ms is not None:
        text += f", gc {sample.gc_ms:,.0f} ms"
    return text


async def _profile(run: Run) -> dict[str, str]:
    """One extra run of each Switchyard scenario under cProfile (not part of the figures)."""
    profile_dir = run.settings.profile_dir
    assert profile_dir is not None
    profile_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for name, runner in (("switchyard", run_switchyard), ("consume", run_consume)):
        if name not in run.settings.scenarios:
            continue
        await run.admin.flushall()
        profiler = cProfile.Profile()
        started = time.perf_counter()
        await runner(replace(run, profiler=profiler), run.settings.events)
        path = profile_dir / f"{name}.pstats"
        profiler.dump_stats(path)
        progress(f"profiled {name}: {time.perf_counter() - started:.2f} s under cProfile -> {path}")
        written[name] = str(path)
    return written


def print_profile(path: Path, title: str, limit: int = 25) -> None:
    """Top functions by own time: all of them, then only those in router/ and actors/."""
    stats = pstats.Stats(str(path))
    rows: list[tuple[float, float, int, str]] = []
    total = 0.0
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, function), (_, calls, tottime, cumtime, _) in raw.items():
        total += tottime
        rows.append((tottime, cumtime, calls, f"{_short(filename)}:{line}({function})"))
    rows.sort(reverse=True)
    ours = [row for row in rows if row[3].startswith(("router/", "actors/"))]
    for heading, chosen in (("all code", rows), ("router/ and actors/ only", ours)):
        print(f"\n--- profile of {title}: top {limit} by own time, {heading} "
              f"(total {total:.2f} s) ---")  # fmt: skip
        print(f"{'own s':>7} {'own %':>6} {'cum s':>7} {'calls':>9}  function")
        for tottime, cumtime, calls, name in chosen[:limit]:
            share = 100 * tottime / total if total else 0.0
            print(f"{tottime:7.3f} {share:5.1f}% {cumtime:7.3f} {calls:9d}  {name}")


def _short(filename: str) -> str:
    path = Path(filename)
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(PROJECT_ROOT))
    for marker in ("site-packages/", "lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def summarise(samples: Sequence[Sample], settings: Settings) -> list[dict[str, Any]]:
    """Medians per scenario, and each median rate as a ratio to the baseline's median rate."""
    order = [name for name in DESCRIPTIONS if any(s.scenario == name for s in samples)]
    rows: list[dict[str, Any]] = []
    for name in order:
        chosen = [s for s in samples if s.scenario == name]
        median = statistics.median(s.seconds for s in chosen)
        cpu = [s.cpu_us for s in chosen if s.cpu_us is not None]
        redis_cpu = [s.redis_cpu_us for s in chosen if s.redis_cpu_us is not None]
        rows.append(
            {
                "scenario": name,
                "description": DESCRIPTIONS[name],
                "events": settings.events,
                "runs_seconds": [round(s.seconds, 4) for s in chosen],
                "median_seconds": round(median, 4),
                "events_per_s": round(settings.events / median, 1),
                "cpu_us_per_event": round(statistics.median(cpu), 2) if cpu else None,
                "redis_cpu_us_per_event": round(statistics.median(redis_cpu), 2)
                if redis_cpu
                else None,
                "redis_calls_last_run": chosen[-1].redis_calls,
            }
        )
    baseline = next((r["events_per_s"] for r in rows if r["scenario"] == "baseline"), None)
    for row in rows:
        row["ratio_to_baseline"] = round(row["events_per_s"] / baseline, 3) if baseline else None
    return rows


def print_table(rows: Sequence[dict[str, Any]], settings: Settings) -> None:
    print(
        f"\nmedians of {settings.runs} run(s); {settings.events:,} events each; "
        f"POST {settings.post_batch} events x {settings.connections} connections; "
        f"pool concurrency {settings.concurrency}"
    )
    header = (
        f"{'scenario':<42} {'events':>8} {'seconds':>8} {'events/s':>9} {'vs baseline':>11}"
        f" {'cpu us/ev':>9} {'redis us/ev':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row["ratio_to_baseline"]
        print(
            f"{row['description']:<42} {row['events']:>8,} {row['median_seconds']:>8.3f} "
            f"{row['events_per_s']:>9,.0f} {'-' if ratio is None else f'{ratio:.2f}x':>11}"
            f" {_num(row['cpu_us_per_event']):>9} {_num(row['redis_cpu_us_per_event']):>11}"
        )
    print(
        "cpu us/ev: CPU of the process running the loop or the service (not the load "
        "generator) per event;\nredis us/ev: redis-server CPU per event. Quote ratios against "
        "the baseline of the same run."
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# --- command line ---


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path | None, str]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="Switchyard throughput against a bare redis.asyncio loop (bench/README.md).",
    )
    defaults = Settings()
    parser.add_argument("--events", type=int, help=f"events per run (default {defaults.events:,})")
    parser.add_argument("--runs", type=int, help=f"runs per scenario (default {defaults.runs})")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 events, 1 run")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(RUNNERS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument("--batch", type=int, default=defaults.post_batch, help="events per POST")
    parser.add_argument(
        "--connections", type=int, default=defaults.connections, help="concurrent POSTs"
    )
    parser.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="pool concurrency"
    )
    parser.add_argument(
        "--event-ids",
        action="store_true",
        help="switchyard: give every posted event an event_id, so ingest de-duplicates it",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the unmeasured warm-up")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the measured runs, one cProfile'd run per Switchyard scenario into DIR",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop of the bare loop and the service alike (default auto: uvloop)",
    )
    args = parser.parse_args(argv)
    settings = Settings(
        post_batch=args.batch,
        connections=args.connections,
        concurrency=args.concurrency,
        event_ids=args.event_ids,
        warmup=not args.no_warmup,
        profile_dir=args.profile,
    )
    if args.quick:
        settings = replace(settings, events=5_000, runs=1, warmup=False)
    if args.events is not None:
        settings = replace(settings, events=args.events)
    if args.runs is not None:
        settings = replace(settings, runs=args.runs)
    if args.scenario:
        settings = replace(settings, scenarios=tuple(dict.fromkeys(args.scenario)))
    if settings.events < 1 or settings.runs < 1:
        parser.error("--events and --runs must be positive")
    return settings, args.json, args.loop


_signalled: list[int] = []  # SIGTERMs received, to tell them from a cancel from inside


async def _main(settings: Settings, json_path: Path | None) -> int:
    task = asyncio.current_task()
    assert task is not None

    def on_sigterm() -> None:  # clean up like Ctrl-C
        _signalled.append(signal.SIGTERM)
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    samples, env = await bench(settings)
    rows = summarise(samples, settings)
    print_table(rows, settings)
    for name, path in env.get("profiles", {}).items():
        print_profile(Path(path), name)
    if json_path is not None:
        document = {
            "environment": env,
            "results": rows,
            "samples": [asdict(s) for s in samples],
        }
        text = json.dumps(document, indent=2) + "\n"
        await asyncio.to_thread(json_path.write_text, text)
        progress(f"wrote {json_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path, loop = parse_args(argv)
    configure_logging("json", "warning")  # the service's info lines would bury the table
    try:
        return loops.run(_main(settings, json_path), loops.factory(loop))
    except KeyboardInterrupt:
        progress("interrupted; the private redis-server and load generator were stopped")
        return 130
    except asyncio.CancelledError:
        if _signalled:
            progress("terminated; the private redis-server and load generator were stopped")
            return 143
        # Service.start() enters its TaskGroup in our task: when one of its background tasks
        # fails, the TaskGroup cancels us. The task's error was logged by the service.
        progress(
            "bench failed: the benchmark's task was cancelled from inside, most likely by the "
            "Service's TaskGroup after one of its background tasks failed (see the log above)"
        )
        return 1
    except BenchError as exc:
        progress(f"bench failed: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
