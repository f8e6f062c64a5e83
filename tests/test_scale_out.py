"""Scale-out: partitioned classes, one owner per ordered partition across instances, fast
failover, on a single redis-server and on a local 3-master Redis Cluster alike.

Handlers log their start and end into Redis (`bench.ordering.OrderLog`), and the log is
checked for per-key order: an event may repeat after a take-over, it may never start before
its key's previous event ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import GROUP, Serve, events_url
from redis.asyncio.cluster import RedisCluster
from servers import ServiceProcess, free_port, wait_for

from bench.ordering import OrderReport, check, keyed_events, read_log
from router.config import parse_config
from router.embedded.cluster import EmbeddedCluster
from router.errors import ConfigError
from router.streams import keys
from router.streams.client import connect
from router.streams.redis import RedisTransport
from router.streams.transport import Outgoing
from router.testing import event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp

    from router.config import Config
    from router.service.service import Service
    from router.streams.client import RedisClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
FAST_BEATS = "heartbeat_s: 0.1, member_timeout_s: 0.5"
CALM_BEATS = "heartbeat_s: 0.2, member_timeout_s: 3"


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every test here runs on a single Redis and on the cluster."""
    return any_redis_url


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisClient]:
    client = connect(redis_url)
    yield client
    await client.aclose()


def scale_yaml(
    url: str,
    *,
    mode: str = "stream",
    partitions: int = 4,
    sleep_ms: float = 2,
    workers: int = 0,
    beats: str = FAST_BEATS,
    port: int = 0,
    claim_idle_ms: int = 60_000,
) -> str:
    return f"""
service: {{drain_timeout_s: 5, {beats}, log_format: json}}
redis: {{url: "{url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: {port}}}
lanes: [{{name: high, workers: {workers}}}]
routes:
  - {{topic: orders/+, class: orders, key: key}}
classes:
  orders:
    lane: high
    actor: bench.ordering:OrderLog
    mode: {mode}
    concurrency: 4
    partitions: {partitions}
    claim_idle_ms: {claim_idle_ms}
    options: {{url: "{url}", sleep_ms: {sleep_ms}}}
"""


def scale_config(url: str, **settings: Any) -> Config:
    return parse_config(scale_yaml(url, **settings))


async def post_in_order(
    http: aiohttp.ClientSession, targets: list[str], events: list[dict[str, Any]], batch: int = 20
) -> None:
    """Post batches one after the other (so each key's events enter in order), taking turns
    over the `targets`' ingresses."""
    for index, start in enumerate(range(0, len(events), batch)):
        url = targets[index % len(targets)]
        async with http.post(url, json=events[start : start + batch]) as response:
            assert response.status == 202, await response.text()


async def handled_in_order(
    store: RedisClient,
    expected: dict[str, int],
    timeout: float,  # noqa: ASYNC109 - a polling deadline, like wait_for's
) -> OrderReport:
    """Wait until every expected event was handled, then insist no handler start overtook."""
    await wait_for(lambda: all_ended(store, expected), timeout=timeout)
    report = check(await read_log(store), expected)
    assert report.ok, report.out_of_order[:5]
    return report


async def all_ended(store: RedisClient, expected: dict[str, int]) -> bool:
    return check(await read_log(store), expected).missing == 0


def owned(*services: Service) -> dict[str, int]:
    """Partition tag -> how many of the services run its pool now: held, started (a pool just
    taken is not running yet, and /readyz says so), not ended."""
    counts: dict[str, int] = {}
    for service in services:
        assert service.ownership is not None
        for tag, held in service.ownership.held.items():
            if held.pool.running and not held.task.done():
                counts[tag] = counts.get(tag, 0) + 1
    return counts


async def test_two_instances_split_the_ordered_partitions_and_keep_every_keys_order(
    serve: Serve, redis_url: str, store: RedisClient, http: aiohttp.ClientSession
) -> None:
    # Leases that a busy CI machine cannot miss by a stall: this test is about the split.
    config = scale_config(redis_url, partitions=4, beats=CALM_BEATS)
    tags = set(keys.tags("orders", 4))
    async with serve(config) as first, serve(config) as second:
        await wait_for(lambda: set(owned(first, second)) == tags, timeout=10)
        assert set(owned(first, second).values()) == {1}  # one consumer per partition
        for service in (first, second):  # a partition run elsewhere is no reason to refuse
            async with http.get(f"http://127.0.0.1:{service.http_port}/readyz") as ready:
                assert ready.status == 200, await ready.text()
        events = keyed_events(keys=12, per_key=25)
        targets = [events_url(first, "orders/x"), events_url(second, "orders/x")]
        await post_in_order(http, targets, events)
        expected = {f"k{key}": 25 for key in range(12)}
        report = await handled_in_order(store, expected, timeout=20)
    assert report.repeats == 0  # nobody died: nothing was handled twice


async def test_partitions_move_as_instances_join_and_leave_without_breaking_order(
    serve: Serve, redis_url: str, store: RedisClient, http: aiohttp.ClientSession
) -> None:
    config = scale_config(redis_url, partitions=16, sleep_ms=5)  # the joiner surely gets some
    tags = set(keys.tags("orders", 16))
    expected = {f"k{key}": 60 for key in range(8)}
    async with serve(config) as first:
        target = [events_url(first, "orders/x")]
        await wait_for(lambda: set(owned(first)) == tags, timeout=10)
        await post_in_order(http, target, keyed_events(keys=8, per_key=20))
        async with serve(config) as second:  # joins while the first is busy
            await post_in_order(http, target, keyed_events(keys=8, per_key=20, start=20))
            await wait_for(lambda: set(owned(first, second)) == tags and owned(second), timeout=10)
            await first.stop()  # leaves while the second is busy
            await post_in_order(
                http, [events_url(second, "orders/x")], keyed_events(keys=8, per_key=20, start=40)
            )
            await wait_for(lambda: set(owned(second)) == tags, timeout=10)
            await handled_in_order(store, expected, timeout=20)


async def test_a_slow_handler_on_a_live_instance_is_never_taken_over(
    serve: Serve, redis_url: str, store: RedisClient, http: aiohttp.ClientSession
) -> None:
    """Handlers far slower than the member timeout: the instance beats, so it keeps its
    leases and its pending entries; every event runs once."""
    expected = {f"k{key}": 2 for key in range(6)}
    for mode in ("stream", "queue"):
        await store.delete("order:log")
        beats = "heartbeat_s: 0.2, member_timeout_s: 1.2"  # a busy machine's stalls survive
        config = scale_config(redis_url, mode=mode, partitions=2, sleep_ms=1500, beats=beats)
        async with serve(config) as first, serve(config) as second:
            events = keyed_events(keys=6, per_key=2)
            await post_in_order(http, [events_url(first, "orders/x")], events)
            await wait_for(lambda: all_ended(store, expected), timeout=20)
            assert second.ownership is not None
        report = check(await read_log(store), expected)
        assert (report.missing, report.repeats) == (0, 0), mode  # queue mode keeps no order


async def test_changing_the_partition_count_of_a_class_that_holds_events_is_refused(
    serve: Serve, redis_url: str, store: RedisClient, tmp_path: Path
) -> None:
    """A new count would send a key's next events to another stream than its waiting ones."""
    async with serve(scale_config(redis_url, partitions=1, mode="queue")):
        pass  # records the count the keys were made with
    waiting = event({"key": "a", "seq": 0}, cls="orders")
    await RedisTransport(store, GROUP, "test").publish([Outgoing("orders", waiting.encode())])
    with pytest.raises(ConfigError) as refused:
        async with serve(scale_config(redis_url, partitions=4, mode="queue")):
            pass
    assert "classes.orders.partitions" in str(refused.value)
    assert "from 1 to 4" in str(refused.value)
    path = tmp_path / "switchyard.yaml"
    path.write_text(scale_yaml(redis_url, partitions=4, mode="queue"))
    command = [sys.executable, "-m", "router", "check", "--config", str(path)]
    check_run = await asyncio.create_subprocess_exec(*command, stderr=PIPE, cwd=REPO)
    said = (await check_run.communicate())[1].decode()
    assert check_run.returncode == 2
    assert "classes.orders.partitions" in said
    assert "from 1 to 4 while the class's streams hold 1 entries" in said
    await store.delete(keys.stream("orders"))  # drained: now the new count is taken
    async with serve(scale_config(redis_url, partitions=4, mode="queue")) as service:
        assert sorted(service.pools) == keys.tags("orders", 4)


# --- separate processes: SIGKILL, rejoin, lane workers ---


@contextlib.asynccontextmanager
async def processes(
    tmp_path: Path, url: str, count: int, **settings: Any
) -> AsyncIterator[list[tuple[ServiceProcess, str]]]:
    """`count` services as child processes, each on its own HTTP port; (process, events URL)."""
    started: list[tuple[ServiceProcess, str]] = []
    try:
        for index in range(count):
            port = free_port()
            path = tmp_path / f"instance-{index}.yaml"
            path.write_text(scale_yaml(url, port=port, **settings))
            process = ServiceProcess(path, cwd=REPO)
            await process.start()
            started.append((process, f"http://127.0.0.1:{port}/events/orders/x"))
        for process, _ in started:
            await listening(process)
        yield started
    finally:
        for process, _ in started:
            await process.close()


async def listening(process: ServiceProcess) -> None:
    """Wait for the service's HTTP ingress (its lane workers log their own start before)."""
    try:
        await wait_for(lambda: process.logged("http ingress listening"), timeout=20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{process.tail()}") from None


async def lease_holders(store: RedisClient, tags: list[str]) -> dict[str, str]:
    """Partition tag -> the consumer whose lease it is, for the partitions leased now."""
    holders = {}
    for tag in tags:
        holder: Any = await store.get(keys.owner(tag))
        if holder is not None:
            holders[tag] = holder.decode()
    return holders


def pid_of(consumer: str) -> int:
    """A consumer name is `<host>-<pid>-<random>`."""
    return int(consumer.rsplit("-", 2)[1])


async def test_a_sigkilled_instance_hands_its_partitions_over_in_order_and_rejoins(
    tmp_path: Path, redis_url: str, store: RedisClient, http: aiohttp.ClientSession
) -> None:
    """Default heartbeat settings: the survivor takes the dead one's partitions once its
    lease runs out (seconds), its pending entries first; then the dead one comes back."""
    tags = keys.tags("orders", 4)
    expected = {f"k{key}": 60 for key in range(8)}
    beats = "heartbeat_s: 0.5, member_timeout_s: 2.5"
    async with processes(tmp_path, redis_url, 2, beats=beats, sleep_ms=20) as instances:
        await wait_for(lambda: _all_leased(store, tags), timeout=10)
        holders = list((await lease_holders(store, tags)).values())
        busiest = max(holders, key=holders.count)  # the victim holds at least half
        victim, survivor = sorted(instances, key=lambda i: i[0].pid != pid_of(busiest))
        await post_in_order(http, [survivor[1]], keyed_events(keys=8, per_key=40))
        await wait_for(lambda: _ended_at_least(store, 40), timeout=10)
        await victim[0].kill()  # mid-stream, with entries in flight
        await wait_for(lambda: all_ended(store, dict.fromkeys(expected, 40)), timeout=30)
        started = survivor[0].logged("switchyard started")
        assert started is not None
        assert set((await lease_holders(store, tags)).values()) == {started["consumer"]}
        await victim[0].start()  # rejoins: takes some partitions back
        await listening(victim[0])
        await post_in_order(http, [survivor[1]], keyed_events(keys=8, per_key=20, start=40))
        await handled_in_order(store, expected, timeout=30)


async def test_a_sigkilled_instances_pending_queue_entries_move_in_seconds_not_claim_idle(
    tmp_path: Path, redis_url: str, store: RedisClient, http: aiohttp.ClientSession
) -> None:
    """Shared (queue-mode) partitions: the survivor takes the dead one's pending entries when
    its heartbeat stops, long before `claim_idle_ms` (set to ten minutes here)."""
    expected = {f"k{key}": 4 for key in range(8)}
    async with processes(
        tmp_path, redis_url, 2, mode="queue", partitions=2, sleep_ms=2000, claim_idle_ms=600_000
    ) as instances:
        (victim, _), (survivor, _) = instances
        for index, events in enumerate(_halves(keyed_events(keys=8, per_key=4))):
            await post_in_order(http, [instances[index][1]], events)
        await wait_for(lambda: _started_by(store, 16), timeout=15)  # 8 handlers each
        await victim.kill()  # every handler was mid-sleep: its entries are pending
        await wait_for(lambda: all_ended(store, expected), timeout=30)
        assert survivor.returncode is None
    assert check(await read_log(store), expected).missing == 0


async def test_two_lane_workers_never_run_one_ordered_partition_at_once(
    tmp_path: Path, redis_url: str, store: RedisClient, http: aiohttp.ClientSession
) -> None:
    tags = keys.tags("orders", 4)
    expected = {f"k{key}": 30 for key in range(8)}
    async with processes(tmp_path, redis_url, 1, workers=2) as [(service, url)]:
        await wait_for(lambda: _all_leased(store, tags), timeout=15)
        holders = await lease_holders(store, tags)
        assert service.pid not in {pid_of(c) for c in holders.values()}  # the workers hold them
        await post_in_order(http, [url], keyed_events(keys=8, per_key=30))
        await handled_in_order(store, expected, timeout=30)


async def _all_leased(store: RedisClient, tags: list[str]) -> bool:
    return len(await lease_holders(store, tags)) == len(tags)


async def _ended_at_least(store: RedisClient, count: int) -> bool:
    return check(await read_log(store)).ended >= count


async def _started_by(store: RedisClient, count: int) -> bool:
    lines = await read_log(store)
    return sum(1 for line in lines if line.split()[2] == b"start") >= count


def _halves(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    middle = len(events) // 2
    return [events[:middle], events[middle:]]


# --- a Redis Cluster of our own: partitions over nodes, a node going away ---


async def test_the_partitions_of_a_class_spread_over_the_cluster_nodes(
    serve: Serve, cluster_url: str, http: aiohttp.ClientSession
) -> None:
    config = scale_config(cluster_url, mode="queue", partitions=8, sleep_ms=0)
    expected = {f"k{key}": 10 for key in range(16)}
    store = connect(cluster_url)
    try:
        async with serve(config) as service:
            await post_in_order(http, [events_url(service, "orders/x")], keyed_events(16, 10))
            await wait_for(lambda: all_ended(store, expected), timeout=20)
        assert isinstance(store, RedisCluster)
        homes = [store.get_node_from_key(keys.stream(tag)) for tag in keys.tags("orders", 8)]
        assert len({home.port for home in homes if home is not None}) == 3  # every master
        lengths = [await store.xlen(keys.stream(tag)) for tag in keys.tags("orders", 8)]
        assert sum(lengths) == 160
        assert all(lengths)  # 16 keys hash over all 8 partitions
    finally:
        await store.aclose()


async def test_a_cluster_node_going_away_is_redis_unavailable_and_nothing_accepted_is_lost(
    serve: Serve, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cluster = EmbeddedCluster(tmp_path / "cluster", masters=3, appendonly=True)
    await cluster.start()
    store = connect(cluster.url)
    accepted: dict[str, int] = {}
    try:
        config = scale_config(cluster.url, mode="queue", partitions=6, sleep_ms=0)
        async with serve(config) as service:
            url, ready_url = events_url(service, "orders/x"), readyz(service)
            await post_counted(http, url, accepted, seq=0)
            await wait_for(lambda: all_ended(store, accepted), timeout=10)
            down = cluster.nodes[1]
            await down.kill()
            await wait_for(lambda: status_of(http, ready_url, 503), timeout=20)
            async with http.post(url, json=[{"key": f"k{n}", "seq": 1} for n in range(12)]) as r:
                assert r.status == 503  # some of the batch's partitions live on the lost node
                assert "Retry-After" in r.headers
            await down.start()
            await cluster.wait_ok()
            await wait_for(lambda: status_of(http, ready_url, 200), timeout=30)
            await post_counted(http, url, accepted, seq=1)
            await wait_for(lambda: all_ended(store, accepted), timeout=30)
    finally:
        await store.aclose()
        await cluster.stop()


def readyz(service: Service) -> str:
    return f"http://127.0.0.1:{service.http_port}/readyz"


async def status_of(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    async with http.get(url) as response:
        return response.status == status


async def post_counted(
    http: aiohttp.ClientSession, url: str, accepted: dict[str, int], seq: int
) -> None:
    """One event for each of 12 keys, counted in `accepted` (key -> events) once taken."""
    async with http.post(url, json=[{"key": f"k{n}", "seq": seq} for n in range(12)]) as reply:
        assert reply.status == 202, await reply.text()
    for n in range(12):
        accepted[f"k{n}"] = seq + 1


async def test_status_shows_each_ordered_class_partitions_and_their_owners(
    serve: Serve, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "switchyard.yaml"
    path.write_text(scale_yaml(redis_url, partitions=4))
    config = scale_config(redis_url, partitions=4)
    async with serve(config) as first, serve(config) as second:
        await wait_for(lambda: set(owned(first, second)) == set(keys.tags("orders", 4)))
        command = [sys.executable, "-m", "router", "status", "--config", str(path)]
        status = await asyncio.create_subprocess_exec(*command, stdout=PIPE, cwd=REPO)
        out = (await status.communicate())[0].decode()
    assert status.returncode == 0, out
    [line] = [
        line
        for line in out.splitlines()
        if line.strip().startswith("orders ") and "partition" in line
    ]
    consumers = {service.transport.consumer for service in (first, second)}
    shown = dict(part.rsplit(" x", 1) for part in line.split(": ", 1)[1].split(", "))
    assert set(shown) <= consumers
    assert sum(int(count) for count in shown.values()) == 4
