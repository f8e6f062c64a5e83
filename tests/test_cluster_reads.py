"""Reads on a Redis Cluster: each goes to the node that serves its partition, in one round
trip, and follows the partition when the cluster moves it to another node."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from helpers import GROUP
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from router.embedded.cluster import EmbeddedCluster
from router.embedded.process import HOST
from router.streams import keys
from router.streams.client import connect
from router.streams.redis import RedisTransport
from router.streams.transport import Outgoing

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

READ_BLOCK_MS = 10  # entries are there before every read; never 0, which blocks for ever


async def test_a_read_is_one_command_on_its_partitions_node(
    cluster_url: str, redis_cluster: EmbeddedCluster
) -> None:
    client = connect(cluster_url)
    try:
        transport = RedisTransport(client, GROUP, "reader")
        tags = keys.tags("orders", 6)
        for tag in tags:
            await transport.ensure_group(tag)
        await transport.publish([Outgoing("orders", tag.encode(), tag=tag) for tag in tags])
        before = await calls(redis_cluster.ports)
        read = [await transport.read(tag, 10, READ_BLOCK_MS) for tag in tags]
        after = await calls(redis_cluster.ports)
    finally:
        await client.aclose()
    assert [[data for _, data in entries] for entries in read] == [[t.encode()] for t in tags]
    assert after["xreadgroup"] - before["xreadgroup"] == len(tags)
    assert after["command|getkeys"] == before["command|getkeys"]  # no node asked the way


async def test_a_read_follows_its_partition_when_the_cluster_moves_it(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(tmp_path / "cluster", masters=3)  # ours: one of its slots moves
    await cluster.start()
    reader, writer = connect(cluster.url), connect(cluster.url)
    try:
        assert isinstance(reader, RedisCluster)
        tag = keys.tags("orders", 4)[1]
        transport = RedisTransport(reader, GROUP, "reader")
        await transport.ensure_group(tag)
        await transport.publish([Outgoing("orders", b"before", tag=tag)])
        assert [data for _, data in await transport.read(tag, 10, READ_BLOCK_MS)] == [b"before"]
        home = reader.get_node_from_key(keys.stream(tag))
        assert home is not None
        source = int(home.port)
        elsewhere = next(port for port in cluster.ports if port != source)

        await move_slot(reader.keyslot(keys.stream(tag)), source, elsewhere)
        moved_in = Outgoing("orders", b"after", tag=tag)
        await RedisTransport(writer, GROUP, "writer").publish([moved_in])
        read = await transport.read(tag, 10, READ_BLOCK_MS)  # the reader's map is out of date
        now_home = reader.get_node_from_key(keys.stream(tag))
    finally:
        await reader.aclose()
        await writer.aclose()
        await cluster.stop()
    assert [data for _, data in read] == [b"after"]
    assert now_home is not None
    assert now_home.port == elsewhere  # the read taught the client where the slot went


async def calls(ports: list[int]) -> dict[str, int]:
    """Calls of XREADGROUP and COMMAND GETKEYS over every node so far."""
    totals = {"xreadgroup": 0, "command|getkeys": 0}
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
