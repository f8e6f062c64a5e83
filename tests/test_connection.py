"""The redis-py connections of Switchyard's clients: a command whose socket was closed before
it went out fails as a lost connection, which every caller backs off from, on asyncio's loop
and on uvloop alike, whether the loop closed it (Redis restarted, a cluster node went away)
or another task disconnected it meanwhile.

uvloop raised RuntimeError for the first, and redis-py AttributeError for the second; a pool
reading through a cluster client crashed and restarted on them when a cluster node was
killed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis, RedisCluster
from servers import wait_for

from router.streams.client import connect
from router.streams.connection import TcpConnection, socket_gone
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from redis.asyncio.connection import AbstractConnection


async def ping(connection: AbstractConnection) -> Any:
    await connection.send_command("PING")
    return await connection.read_response()


async def assert_lost_once_its_socket_closed(connection: AbstractConnection) -> None:
    """Connect; close the socket under redis-py, as the loop does when a node that went away
    resets it, and let the loop finish closing it; then send a command as redis-py does, not
    knowing."""
    await connection.connect()  # type: ignore[no-untyped-call]
    assert await ping(connection) == b"PONG"
    reader, writer = connection._reader, connection._writer
    assert reader is not None
    assert writer is not None
    writer.transport.close()
    await wait_for(reader.at_eof, timeout=5)  # the protocol was told: the socket is closed
    try:
        with pytest.raises(UNAVAILABLE):  # uvloop raised RuntimeError here
            await ping(connection)
    finally:
        await connection.disconnect()


class DisconnectedWhileSending(TcpConnection):
    """Once `armed`, another task disconnects the connection just as this one writes."""

    armed = False

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        if self.armed:
            await self.disconnect()
        await super()._send_packed_command(command)


@pytest.fixture
async def server_client(redis_url: str) -> AsyncIterator[Redis]:
    """A client of one redis-server, as the service connects."""
    client = connect(redis_url)
    assert isinstance(client, Redis)
    yield client
    await client.aclose()


async def test_a_connection_disconnected_while_a_command_is_sent_is_a_lost_connection(
    server_client: Redis,
) -> None:
    settings = server_client.connection_pool.connection_kwargs
    # With a socket timeout, as the service has, redis-py writes from a task of its own:
    # another task's disconnect can come between the command and its write.
    connection = DisconnectedWhileSending(**{**settings, "socket_timeout": 5})
    await connection.connect()  # type: ignore[no-untyped-call]
    assert await ping(connection) == b"PONG"
    connection.armed = True
    with pytest.raises(UNAVAILABLE):  # redis-py raised AttributeError here
        await ping(connection)


async def test_a_server_client_s_closed_connection_is_a_lost_connection(
    server_client: Redis,
) -> None:
    pool = server_client.connection_pool
    assert pool.connection_class is TcpConnection
    await assert_lost_once_its_socket_closed(pool.connection_class(**pool.connection_kwargs))
    assert await server_client.ping() is True  # and the client goes on


async def test_every_cluster_node_s_closed_connection_is_a_lost_connection(
    cluster_url: str,
) -> None:
    client = connect(cluster_url)
    assert isinstance(client, RedisCluster)
    try:
        await client.initialize()
        nodes = client.get_nodes()
        assert len(nodes) == 3
        assert {node.connection_class for node in nodes} == {TcpConnection}
        for node in nodes:
            await assert_lost_once_its_socket_closed(node.acquire_connection())
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_only_a_closed_socket_is_taken_for_a_lost_connection() -> None:
    closed = "unable to perform operation on <TCPTransport closed=True>; the handler is closed"
    assert socket_gone(RuntimeError(closed))
    assert socket_gone(AttributeError("no writer", name="writelines", obj=None))
    assert socket_gone(AttributeError("no writer", name="drain", obj=None))
    # Anything else is a bug, and must surface as one rather than as Redis being away.
    assert not socket_gone(RuntimeError("Event loop is closed"))
    assert not socket_gone(AttributeError("a typo", name="writelnes", obj=None))
    assert not socket_gone(AttributeError("a writer", name="writelines", obj=object()))
