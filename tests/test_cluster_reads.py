"""The hot path on a Redis Cluster: a read, an ack and a write go to the node that serves
their partition, in one round trip, through the client or on a line alike; they follow the
partition when the cluster moves it, and find it again when its old node is gone."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest
from helpers import GROUP
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from servers import wait_for

from router.embedded.cluster import EmbeddedCluster
from router.embedded.process import HOST
from router.streams import keys
from router.streams.client import connect
from router.streams.line import Lines
from router.streams.redis import RedisTransport
from router.streams.transport import UNAVAILABLE, Outgoing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from router.streams.client import RedisClient

pytestmark = pytest.mark.integration

READ_BLOCK_MS = 10  # entries are there before every read; never 0, which blocks for ever
LINE = "ingest"


@pytest.fixture(params=["client", "lines"])
def on_lines(request: pytest.FixtureRequest) -> bool:
    """Each test twice: the transport through the client, and on lines as the service runs."""
    return bool(request.param == "lines")


@pytest.fixture
async def own_cluster(tmp_path: Path) -> AsyncIterator[EmbeddedCluster]:
    """A cluster of the test's own, whose slots move and whose nodes stop; the nodes still up
    serve their slots while one is down."""
    cluster = EmbeddedCluster(tmp_path / "cluster", masters=3, full_coverage=False)
    await cluster.start()
    yield cluster
    await cluster.stop()


def transport_on(client: RedisClient, on_lines: bool, consumer: str) -> RedisTransport:
    return RedisTransport(client, GROUP, consumer, lines=Lines(client) if on_lines else None)


async def test_a_read_an_ack_and_a_write_are_one_command_each_on_the_partitions_node(
    cluster_url: str, redis_cluster: EmbeddedCluster, on_lines: bool
) -> None:
    client = connect(cluster_url)
    transport = transport_on(client, on_lines, "reader")
    try:
        tags = keys.tags("orders", 6)
        for tag in tags:
            await transport.ensure_group(tag)
        before = await calls(redis_cluster.ports)
        for tag in tags:
            await transport.write([Outgoing("orders", tag.encode(), tag=tag)], line=LINE)
        read = [await transport.read(tag, 10, READ_BLOCK_MS) for tag in tags]
        for tag, entries in zip(tags, read, strict=True):
            await transport.settle(tag, [entry_id for entry_id, _ in entries])
        after = await calls(redis_cluster.ports)
        pending = [await client.xpending(keys.stream(tag), GROUP) for tag in tags]
    finally:
        await transport.close()
        await client.aclose()
    assert [[data for _, data in entries] for entries in read] == [[t.encode()] for t in tags]
    assert [summary["pending"] for summary in pending] == [0] * len(tags)
    made = {command: after[command] - before[command] for command in after}
    assert made == {"eval": 6, "xreadgroup": 6, "xack": 6, "command|getkeys": 0}


async def test_the_hot_path_follows_its_partition_when_the_cluster_moves_it(
    own_cluster: EmbeddedCluster, on_lines: bool
) -> None:
    tag = keys.tags("orders", 4)[1]
    async with reader_and_writer(own_cluster, on_lines, tag) as (reader, writer, transport):
        await transport.write([Outgoing("orders", b"before", tag=tag)], line=LINE)
        assert [data for _, data in await transport.read(tag, 10, READ_BLOCK_MS)] == [b"before"]

        _, elsewhere = await move_away(own_cluster, reader, tag)
        await RedisTransport(writer, GROUP, "writer").publish(
            [Outgoing("orders", b"after", tag=tag)]
        )
        read = await transport.read(tag, 10, READ_BLOCK_MS)  # the reader's map is out of date
        await transport.settle(tag, [entry_id for entry_id, _ in read])
        [written] = (await transport.write([Outgoing("orders", b"last", tag=tag)], line=LINE)).ids
        moved_to = port_of(reader, tag)
        pending = await writer.xpending(keys.stream(tag), GROUP)
        length = await writer.xlen(keys.stream(tag))
    assert [data for _, data in read] == [b"after"]
    assert isinstance(written, bytes)
    assert (pending["pending"], length) == (1, 3)  # "before" unacknowledged, "after" acked
    assert moved_to == elsewhere  # what was redirected taught the client where the slot went


async def test_a_line_finds_its_partition_again_once_its_old_node_is_gone(
    own_cluster: EmbeddedCluster,
) -> None:
    """The client never saw the slot move (the line carried every command), so its map still
    names the old node when that node stops: the line's failure has the map read afresh."""
    tag = keys.tags("orders", 4)[2]
    async with reader_and_writer(own_cluster, True, tag) as (reader, writer, transport):
        await transport.read(tag, 10, READ_BLOCK_MS)  # the line to the partition's node is open
        source, elsewhere = await move_away(own_cluster, reader, tag)
        await RedisTransport(writer, GROUP, "writer").publish([Outgoing("orders", b"x", tag=tag)])
        await own_cluster.nodes[own_cluster.ports.index(source)].stop()

        async def read_again() -> bool:
            try:
                return bool(await transport.read(tag, 10, READ_BLOCK_MS))
            except UNAVAILABLE:
                return False  # the reader backs off and reads again, as here

        await wait_for(read_again, timeout=10)
    assert port_of(reader, tag) == elsewhere


async def test_lines_failing_together_read_the_slot_map_once(
    cluster_url: str, redis_cluster: EmbeddedCluster
) -> None:
    """A node going away fails every line to it at once: that must not become as many
    readings of the cluster's map, each a command on every node it tries."""
    client = connect(cluster_url)
    lines = Lines(client)
    try:
        await client.ping()
        start = await topology_reads(redis_cluster.ports)
        await lines.lost()
        one = await topology_reads(redis_cluster.ports) - start
        await asyncio.gather(*(lines.lost() for _ in range(20)))
        twenty = await topology_reads(redis_cluster.ports) - start - one
    finally:
        await lines.close()
        await client.aclose()
    assert one >= 1
    assert twenty == one


async def topology_reads(ports: list[int]) -> int:
    total = 0
    for port in ports:
        async with Redis(host=HOST, port=port) as node:
            stats = await node.info("commandstats")
        total += int(stats.get("cmdstat_cluster|slots", {}).get("calls", 0))
    return total


@contextlib.asynccontextmanager
async def reader_and_writer(
    cluster: EmbeddedCluster, on_lines: bool, tag: str
) -> AsyncIterator[tuple[RedisCluster, RedisCluster, RedisTransport]]:
    """A reader's transport, with its group on the partition `tag`, and a second client that
    writes as another instance would; all closed at the end."""
    reader, writer = connect(cluster.url), connect(cluster.url)
    transport = transport_on(reader, on_lines, "reader")
    try:
        assert isinstance(reader, RedisCluster)
        assert isinstance(writer, RedisCluster)
        await transport.ensure_group(tag)
        yield reader, writer, transport
    finally:
        await transport.close()
        await reader.aclose()
        await writer.aclose()


async def move_away(cluster: EmbeddedCluster, client: RedisCluster, tag: str) -> tuple[int, int]:
    """Reshard the partition's slot from the node that serves it to another; both ports."""
    source = port_of(client, tag)
    elsewhere = next(port for port in cluster.ports if port != source)
    await move_slot(client.keyslot(keys.stream(tag)), source, elsewhere)
    return source, elsewhere


def port_of(client: RedisCluster, tag: str) -> int:
    node = client.get_node_from_key(keys.stream(tag))
    assert node is not None
    return int(node.port)


async def calls(ports: list[int]) -> dict[str, int]:
    """Calls of the hot path's commands and of COMMAND GETKEYS over every node so far."""
    totals = {"eval": 0, "xreadgroup": 0, "xack": 0, "command|getkeys": 0}
    for port in ports:
        async with Redis(host=HOST, port=port) as node:
            stats = await node.info("commandstats")
        for command in totals:
            totals[command] += stats.get(f"cmdstat_{command}", {}).get("calls", 0)
    return totals


async def move_slot(slot: int, source: int, target: int) -> None:
    """Reshard one slot with its keys from the node on port `source` to the one on `target`,
    as an operator's resharding does, and tell every node."""
    async with Redis(host=HOST, port=source) as old, Redis(host=HOST, port=target) as new:
        old_id, new_id = await old.cluster("MYID"), await new.cluster("MYID")
        await new.cluster("SETSLOT", slot, "IMPORTING", old_id)
        await old.cluster("SETSLOT", slot, "MIGRATING", new_id)
        moving = await old.cluster("GETKEYSINSLOT", slot, 100)
        await old.migrate(HOST, target, moving, 0, 5000)
        for node in (new, old):  # the new owner first, as Redis's resharding guide has it
            await node.cluster("SETSLOT", slot, "NODE", new_id)
