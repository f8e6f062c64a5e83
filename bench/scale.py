"""Scale-out benchmark: 1, 2 and 4 Switchyard instances on one Redis and on a 3-master cluster.

    .venv/bin/python -m bench.scale [--part drain|e2e|order|failover|idle ...] [--quick]
                                    [--json out.json] [--checkout DIR]

One command starts everything on free ports in a temporary directory (a redis-server with
append-only off, a local 3-master Redis Cluster), runs each instance as its own
`python -m router run` process, prints one table per part and stops everything it started,
also on Ctrl-C. Figures are ratios to 1 instance in the same run: this machine is shared.

Parts:
  drain     N events prefilled over the P partitions of a queue-mode class with a no-op
            actor; the instances start and the rate is read once all of them run (so their
            start-up is not counted): events/s, ratio to 1 instance, CPU per event of the
            instances and of Redis
  e2e       the same class fed over HTTP: one load generator per instance, each posting N/K
            events to its own instance; "go" to the last event processed
  order     a stream-mode class of P partitions whose actor logs each handler's start and end
            (bench.ordering); keyed events posted in order, round-robin over the instances;
            with 2 and 4 instances one is SIGKILLed half-way and restarted; then one service
            with `workers: 2`. Out-of-order starts must be 0; repeats (taken-over entries
            handled again) are counted
  failover  2 instances, default heartbeat settings, a stream-mode and a queue-mode class
            with 50 ms handlers under steady load; SIGKILL the instance holding more leases,
            time until the last entry it had in flight is acknowledged by the other; restart
            it, wait until it owns partitions again; p50/p99 over 20 kills (5 with --quick)
  idle      the default config.yaml (its 13 classes) with no traffic: Redis commands/s per
            instance, with 1 and 4 instances. `--checkout DIR` runs the instances from
            another checkout of Switchyard (say, the release before), for a before figure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench.harness import (
    PROJECT_ROOT,
    BenchError,
    child,
    expect_ready,
    fill_stream,
    group_cpu_seconds,
    progress,
    say,
    until,
)
from bench.ordering import check, keyed_events, read_log
from router.embedded.cluster import EmbeddedCluster
from router.embedded.process import free_port
from router.embedded.redis import EmbeddedRedis
from router.streams import keys
from router.streams.client import connect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from redis.asyncio import Redis

    from router.streams.client import RedisClient

PARTS = ("drain", "e2e", "order", "failover", "idle")
GROUP = "switchyard"
CLASS = "bench"
INSTANCES = (1, 2, 4)


@dataclass
class Settings:
    parts: list[str]
    events: int = 300_000  # drain; e2e uses a third
    partitions: int = 8
    concurrency: int = 32  # per partition
    kills: int = 20
    ordered_events: int = 12_000
    checkout: Path = PROJECT_ROOT

    @classmethod
    def quick(cls, parts: list[str], checkout: Path) -> Settings:
        return cls(parts, events=60_000, kills=5, ordered_events=3_000, checkout=checkout)


# --- the Redis under test ---


@dataclass
class Target:
    """A Redis to run instances against: its URL, and a client per node for CPU figures."""

    name: str
    url: str
    nodes: list[Redis]
    client: RedisClient

    async def flush(self) -> None:
        for node in self.nodes:
            await node.flushall()

    async def cpu_seconds(self) -> float:
        total = 0.0
        for node in self.nodes:
            info = await node.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total

    async def calls(self) -> int:
        total = 0
        for node in self.nodes:
            stats = await node.info("commandstats")
            total += sum(
                int(value["calls"])
                for name, value in stats.items()
                if name not in ("cmdstat_info", "cmdstat_config|resetstat")
            )
        return total


@contextlib.asynccontextmanager
async def targets(workdir: Path) -> AsyncIterator[list[Target]]:
    """A single redis-server and a 3-master cluster, both ours, stopped at the end."""
    from redis.asyncio import Redis  # noqa: PLC0415 - only the parent needs node clients

    single = EmbeddedRedis(workdir / "redis", appendonly=False)
    cluster = EmbeddedCluster(workdir / "cluster", masters=3)
    made: list[Target] = []
    try:
        await single.start()
        await cluster.start()
        made.append(
            Target("1 Redis", single.url, [Redis.from_url(single.url)], connect(single.url))
        )
        cluster_nodes = [Redis(host="127.0.0.1", port=port) for port in cluster.ports]
        made.append(Target("3-master cluster", cluster.url, cluster_nodes, connect(cluster.url)))
        yield made
    finally:
        for target in made:
            for node in target.nodes:
                await node.aclose()
            await target.client.aclose()
        await cluster.stop()
        await single.stop()


# --- instances ---


def instance_yaml(url: str, port: int, *, classes: str, workers: int = 0) -> str:
    """One instance's config: default heartbeat settings, HTTP on `port`, no MQTT."""
    return f"""
service: {{name: bench, log_level: warning, log_format: json, drain_timeout_s: 5}}
redis: {{url: "{url}", block_ms: 500, stats_interval_s: 2}}
http: {{host: 127.0.0.1, port: {port}}}
mqtt: {{url: "off"}}
lanes: [{{name: bench, workers: {workers}}}]
{classes}
"""


def noop_classes(settings: Settings, mode: str = "queue") -> str:
    return f"""
routes:
  - {{topic: bench/+, class: {CLASS}, key: user_id}}
classes:
  {CLASS}:
    lane: bench
    actor: bench.noop:NoOp
    mode: {mode}
    partitions: {settings.partitions}
    concurrency: {settings.concurrency}
"""


@dataclass
class Instance:
    """One `python -m router run` child: its process, HTTP base URL and log."""

    process: asyncio.subprocess.Process
    base_url: str
    log: Path

    @property
    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.process.pid)  # its own process group


@contextlib.asynccontextmanager
async def instance(
    workdir: Path,
    name: str,
    yaml: str,
    port: int,
    *,
    cwd: Path = PROJECT_ROOT,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Instance]:
    """`python -m router run` on `yaml` (written to a file; "" runs the config.yaml of
    `cwd`, with `env`), serving HTTP on `port`."""
    path = cwd / "config.yaml"
    if yaml:
        path = workdir / f"{name}.yaml"
        path.write_text(yaml)
    log = workdir / f"{name}.log"
    command = (sys.executable, "-m", "router", "run", "--config", path)
    async with child(*command, log=log, stdin=False, stdout=False, cwd=cwd, env=env) as process:
        yield Instance(process, f"http://127.0.0.1:{port}", log)


@contextlib.asynccontextmanager
async def instances(
    workdir: Path, count: int, make_yaml: Callable[[int], str]
) -> AsyncIterator[list[Instance]]:
    """`count` instances, each on its own HTTP port, ready (GET /readyz 200) when yielded."""
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for index in range(count):
            port = free_port()
            started.append(
                await stack.enter_async_context(
                    instance(workdir, f"instance-{index}", make_yaml(port), port)
                )
            )
        await asyncio.gather(*(ready(each) for each in started))
        yield started


async def ready(each: Instance, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if each.process.returncode is not None:
                raise BenchError(f"an instance exited: {each.log.read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{each.base_url}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise BenchError(f"an instance was not ready within {timeout_s:.0f} s")


async def processed(client: RedisClient, tags: Sequence[str]) -> int:
    """Entries acknowledged in the class's partitions: read by the group, minus pending."""
    done = 0
    for tag in tags:
        groups: Any = await client.xinfo_groups(keys.stream(tag))
        for entry in groups:
            fields = {_text(k): v for k, v in entry.items()}
            if _text(fields.get("name")) == GROUP:
                done += int(fields.get("entries-read") or 0) - int(fields.get("pending") or 0)
    return done


# --- drain ---


async def drain(workdir: Path, target: Target, count: int, settings: Settings) -> dict[str, Any]:
    """Steady-state drain rate of `count` instances over prefilled partitions."""
    await target.flush()
    tags = keys.tags(CLASS, settings.partitions)
    share = settings.events // len(tags)
    for tag in tags:
        await fill_stream(target.url, CLASS, "bench", share, tag=tag)
    total = share * len(tags)
    yaml = functools.partial(instance_yaml, target.url, classes=noop_classes(settings))
    async with instances(workdir, count, yaml) as running:
        first = await _figures(target, running, tags)
        if total - first["done"] < total // 3:
            raise BenchError("the instances drained most events while starting; use more events")
        done = int(total * 0.95)
        await until(lambda: _done_at_least(target, tags, done), 300, "the drain", every_s=0.1)
        last = await _figures(target, running, tags)
    events = last["done"] - first["done"]
    seconds = last["at"] - first["at"]
    return {
        "target": target.name,
        "instances": count,
        "events": events,
        "rate": events / seconds,
        "instance_cpu_us": (last["cpu"] - first["cpu"]) / events * 1e6,
        "redis_cpu_us": (last["redis_cpu"] - first["redis_cpu"]) / events * 1e6,
    }


async def _figures(target: Target, running: list[Instance], tags: list[str]) -> dict[str, float]:
    return {
        "at": time.perf_counter(),
        "done": await processed(target.client, tags),
        "cpu": sum(each.cpu_seconds for each in running),
        "redis_cpu": await target.cpu_seconds(),
    }


async def _done_at_least(target: Target, tags: list[str], count: int) -> bool:
    return await processed(target.client, tags) >= count


# --- end to end ---


async def end_to_end(
    workdir: Path, target: Target, count: int, settings: Settings
) -> dict[str, Any]:
    """One load generator per instance posts its share over HTTP; go to all processed."""
    await target.flush()
    tags = keys.tags(CLASS, settings.partitions)
    events = settings.events // 3 // count * count
    yaml = functools.partial(instance_yaml, target.url, classes=noop_classes(settings))
    async with instances(workdir, count, yaml) as running, contextlib.AsyncExitStack() as stack:
        generators = []
        for each in running:
            command = (
                sys.executable, "-m", "bench.loadgen", "--url", each.base_url,
                "--topic", "bench/x", "--events", str(events // count), "--connections", "4",
            )  # fmt: skip
            generators.append(await stack.enter_async_context(child(*command)))
        for generator in generators:
            await expect_ready(generator, "a load generator")
        cpu_before = sum(each.cpu_seconds for each in running)
        redis_before = await target.cpu_seconds()
        started = time.perf_counter()
        for generator in generators:
            await say(generator, "go")
        await until(lambda: _done_at_least(target, tags, events), 300, "the run", every_s=0.1)
        seconds = time.perf_counter() - started
        cpu = sum(each.cpu_seconds for each in running) - cpu_before
        redis_cpu = await target.cpu_seconds() - redis_before
    return {
        "target": target.name,
        "instances": count,
        "events": events,
        "rate": events / seconds,
        "instance_cpu_us": cpu / events * 1e6,
        "redis_cpu_us": redis_cpu / events * 1e6,
    }


# --- order ---


def ordered_classes(url: str, settings: Settings, sleep_ms: float = 0) -> str:
    return f"""
routes:
  - {{topic: orders/+, class: orders, key: key}}
classes:
  orders:
    lane: bench
    actor: bench.ordering:OrderLog
    mode: stream
    partitions: {settings.partitions}
    concurrency: 16
    options: {{url: "{url}", sleep_ms: {sleep_ms}}}
"""


async def order(
    workdir: Path, target: Target, count: int, workers: int, settings: Settings
) -> dict[str, Any]:
    """Keyed events in order over every instance; a SIGKILL and rejoin half-way (count > 1)."""
    await target.flush()
    keys_count = 50
    per_key = settings.ordered_events // keys_count
    classes = ordered_classes(target.url, settings)
    yaml = functools.partial(instance_yaml, target.url, classes=classes, workers=workers)
    events = keyed_events(keys=keys_count, per_key=per_key)
    middle = len(events) // 2
    async with instances(workdir, count, yaml) as running, aiohttp.ClientSession() as http:
        urls = [f"{each.base_url}/events/orders/x" for each in running]
        await _post_in_order(http, urls, events[:middle])
        killed = count > 1
        if killed:
            running[0].process.kill()  # SIGKILL mid-stream
            await running[0].process.wait()
            urls = urls[1:]
        await _post_in_order(http, urls, events[middle:])
        if killed:  # rejoin while the rest is handled
            port = int(running[0].base_url.rsplit(":", 1)[1])
            async with instance(workdir, f"rejoined-{count}", yaml(port), port) as back:
                await ready(back)
                await until(lambda: _ordered_done(target, keys_count, per_key), 120, "order")
        else:
            await until(lambda: _ordered_done(target, keys_count, per_key), 120, "order")
    expected = {f"k{key}": per_key for key in range(keys_count)}
    report = check(await read_log(target.client), expected)
    return {
        "target": target.name,
        "instances": count,
        "workers": workers,
        "events": len(events),
        "out_of_order": len(report.out_of_order),
        "repeats": report.repeats,
        "missing": report.missing,
        "killed": killed,
    }


async def _post_in_order(
    http: aiohttp.ClientSession, urls: list[str], events: list[dict[str, Any]], batch: int = 100
) -> None:
    for index, start in enumerate(range(0, len(events), batch)):
        async with http.post(urls[index % len(urls)], json=events[start : start + batch]) as reply:
            if reply.status != 202:
                raise BenchError(f"HTTP {reply.status}: {await reply.text()}")


async def _ordered_done(target: Target, keys_count: int, per_key: int) -> bool:
    expected = {f"k{key}": per_key for key in range(keys_count)}
    return check(await read_log(target.client), expected).missing == 0


# --- failover ---


FAILOVER_CLASSES = """
routes:
  - {topic: ordered/+, class: ordered, key: key}
  - {topic: shared/+, class: shared, key: key}
classes:
  ordered:
    lane: bench
    actor: bench.noop:Slow
    mode: stream
    partitions: 8
    concurrency: 8
    options: {delay_ms: 50}
  shared:
    lane: bench
    actor: bench.noop:Slow
    mode: queue
    partitions: 2
    concurrency: 16
    options: {delay_ms: 50}
"""


@dataclass
class Kills:
    """Seconds from each SIGKILL to the last of the victim's in-flight entries acknowledged."""

    ordered: list[float] = field(default_factory=list)
    shared: list[float] = field(default_factory=list)


async def failover(workdir: Path, target: Target, settings: Settings) -> dict[str, Any]:
    await target.flush()
    yaml = functools.partial(instance_yaml, target.url, classes=FAILOVER_CLASSES)
    kills = Kills()
    async with (
        instances(workdir, 2, yaml) as running,
        contextlib.AsyncExitStack() as rejoined,
        aiohttp.ClientSession() as http,
    ):
        load = asyncio.create_task(_steady_load(http, [each.base_url for each in running]))
        try:
            for round_number in range(settings.kills):
                victim = await _one_kill(target, running, kills)
                port = int(victim.base_url.rsplit(":", 1)[1])
                back = await rejoined.enter_async_context(
                    instance(workdir, f"rejoined-{round_number}", yaml(port), port)
                )
                await ready(back)
                running[running.index(victim)] = back
                progress(f"  kill {round_number + 1}/{settings.kills}: ordered "
                         f"{kills.ordered[-1]:.2f} s, shared {kills.shared[-1]:.2f} s")  # fmt: skip
        finally:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await load
    return {
        "target": target.name,
        "kills": settings.kills,
        "ordered_p50_s": statistics.median(kills.ordered),
        "ordered_p99_s": _p99(kills.ordered),
        "shared_p50_s": statistics.median(kills.shared),
        "shared_p99_s": _p99(kills.shared),
    }


async def _steady_load(http: aiohttp.ClientSession, bases: list[str]) -> None:
    """About 400 events/s into each class, keyed over 64 keys, to whichever instance is up."""
    seq = 0
    while True:
        batch = [{"key": f"k{(seq + n) % 64}", "n": seq + n} for n in range(20)]
        seq += 20
        for topic in ("ordered/x", "shared/x"):
            for base in bases[seq % len(bases) :] + bases[: seq % len(bases)]:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(f"{base}/events/{topic}", json=batch) as reply:
                        if reply.status == 202:
                            break
        await asyncio.sleep(0.05)


async def _one_kill(target: Target, running: list[Instance], kills: Kills) -> Instance:
    """SIGKILL the instance holding more ordered partitions, once it has entries in flight;
    time the take-over of those entries. Returns the killed instance."""
    ordered_tags, shared_tags = keys.tags("ordered", 8), keys.tags("shared", 2)
    await until(lambda: _all_leased(target, ordered_tags), 60, "every partition owned")
    holders = list((await _lease_holders(target, ordered_tags)).values())
    victim_name = max(holders, key=holders.count)
    victim = next(each for each in running if f"-{each.process.pid}-" in victim_name)
    await until(lambda: _has_pending(target, shared_tags, victim_name), 30, "in-flight entries")
    victim.process.kill()
    killed_at = time.perf_counter()
    await victim.process.wait()
    ordered, shared = await asyncio.gather(
        _taken_over(target, ordered_tags, victim_name, killed_at),
        _taken_over(target, shared_tags, victim_name, killed_at),
    )
    kills.ordered.append(ordered)
    kills.shared.append(shared)
    return victim


async def _taken_over(target: Target, tags: list[str], victim: str, killed_at: float) -> float:
    """Seconds from the kill until every entry `victim` held in `tags` was acknowledged."""
    in_flight = await _pending_of(target, tags, victim)
    await until(lambda: _settled(target, tags, in_flight), 120, "the take-over")
    return time.perf_counter() - killed_at


async def _lease_holders(target: Target, tags: list[str]) -> dict[str, str]:
    holders = {}
    for tag in tags:
        value = await target.client.get(keys.owner(tag))
        if value is not None:
            holders[tag] = _text(value)
    return holders


async def _all_leased(target: Target, tags: list[str]) -> bool:
    return len(await _lease_holders(target, tags)) == len(tags)


async def _pending_of(target: Target, tags: list[str], consumer: str) -> dict[str, set[bytes]]:
    found: dict[str, set[bytes]] = {}
    for tag in tags:
        rows: Any = await target.client.xpending_range(
            keys.stream(tag), GROUP, min="-", max="+", count=10_000, consumername=consumer
        )
        found[tag] = {_bytes(row["message_id"]) for row in rows}
    return found


async def _has_pending(target: Target, tags: list[str], consumer: str) -> bool:
    return any((await _pending_of(target, tags, consumer)).values())


async def _settled(target: Target, tags: list[str], entries: dict[str, set[bytes]]) -> bool:
    """None of `entries` is pending any more: each was acknowledged."""
    for tag in tags:
        if not entries.get(tag):
            continue
        rows: Any = await target.client.xpending_range(
            keys.stream(tag), GROUP, min="-", max="+", count=100_000
        )
        if entries[tag] & {_bytes(row["message_id"]) for row in rows}:
            return False
    return True


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# --- idle ---


async def idle(workdir: Path, target: Target, count: int, settings: Settings) -> dict[str, Any]:
    """Commands/s per instance with the default config's classes and no traffic."""
    await target.flush()
    async with contextlib.AsyncExitStack() as stack:
        for index in range(count):
            port = free_port()
            env = {
                "SWITCHYARD_REDIS_URL": target.url,
                "SWITCHYARD_HTTP_PORT": str(port),
                "SWITCHYARD_MQTT_URL": "off",
                "SWITCHYARD_LOG_LEVEL": "warning",
            }
            each = await stack.enter_async_context(
                instance(workdir, f"idle-{index}", "", port, cwd=settings.checkout, env=env)
            )
            await ready(each)
        await asyncio.sleep(3)  # past start-up: joins, first reads, first stats
        before, started = await target.calls(), time.perf_counter()
        await asyncio.sleep(10)
        calls, seconds = await target.calls() - before, time.perf_counter() - started
    return {
        "target": target.name,
        "instances": count,
        "checkout": str(settings.checkout),
        "commands_per_s": calls / seconds,
        "per_instance": calls / seconds / count,
    }


# --- running the parts ---


async def run(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {part: [] for part in settings.parts}
    with tempfile.TemporaryDirectory(prefix="switchyard-scale-") as temp:
        workdir = Path(temp)
        async with targets(workdir) as made:
            for part in settings.parts:
                progress(f"== {part}")
                for target in made:
                    rows = await _part(part, workdir, target, settings)
                    results[part] += rows
                    _print(part, rows)
    return results


async def _part(
    part: str, workdir: Path, target: Target, settings: Settings
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if part == "failover":
        return [await failover(workdir, target, settings)]
    if part == "order":
        for count in INSTANCES:
            rows.append(await order(workdir, target, count, 0, settings))
        rows.append(await order(workdir, target, 1, 2, settings))
        return rows
    measure = {"drain": drain, "e2e": end_to_end, "idle": idle}[part]
    for count in (1, 4) if part == "idle" else INSTANCES:
        progress(f"  {target.name}, {count} instance(s)")
        rows.append(await measure(workdir, target, count, settings))
    return rows


def _print(part: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if part in ("drain", "e2e"):
            base = next(
                r["rate"] for r in rows if r["target"] == row["target"] and r["instances"] == 1
            )
            print(
                f"{part:<6} {row['target']:<17} {row['instances']} instance(s): "
                f"{row['rate']:>9,.0f} events/s  x{row['rate'] / base:.2f}  "
                f"CPU/event: instances {row['instance_cpu_us']:.1f} us, "
                f"Redis {row['redis_cpu_us']:.1f} us"
            )
        elif part == "order":
            print(
                f"order  {row['target']:<17} {row['instances']} instance(s), workers "
                f"{row['workers']}, {'a SIGKILL and rejoin' if row['killed'] else 'no kill':<20}: "
                f"{row['events']} events, {row['out_of_order']} out of order, "
                f"{row['repeats']} repeats, {row['missing']} missing"
            )
        elif part == "failover":
            print(
                f"failover {row['target']:<17} {row['kills']} kills: ordered p50 "
                f"{row['ordered_p50_s']:.2f} s p99 {row['ordered_p99_s']:.2f} s; shared p50 "
                f"{row['shared_p50_s']:.2f} s p99 {row['shared_p99_s']:.2f} s"
            )
        else:
            print(
                f"idle   {row['target']:<17} {row['instances']} instance(s): "
                f"{row['commands_per_s']:.0f} commands/s, {row['per_instance']:.0f} per instance"
            )
    sys.stdout.flush()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--part", action="append", choices=PARTS, help="repeatable; default all")
    parser.add_argument("--quick", action="store_true", help="fewer events and kills")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--checkout", type=Path, default=PROJECT_ROOT, help="idle: run this tree")
    parser.add_argument("--partitions", type=int, default=8, help="drain, e2e: of the class")
    parser.add_argument("--concurrency", type=int, default=32, help="drain, e2e: per partition")
    args = parser.parse_args(argv)
    parts = args.part or list(PARTS)
    checkout = args.checkout.resolve()
    settings = Settings.quick(parts, checkout) if args.quick else Settings(parts, checkout=checkout)
    settings.partitions, settings.concurrency = args.partitions, args.concurrency
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        results = asyncio.run(run(settings))
    except BenchError as exc:
        print(f"bench.scale: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
