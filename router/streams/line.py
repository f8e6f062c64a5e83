"""Lines: a connection of its own for each caller on the hot path, one command at a time.

Through redis-py's client, a command borrows a pooled connection (a lock and a timeout),
runs under a retry wrapper, and, on Python 3.11 with a socket timeout, sends from a task of
its own (`asyncio.wait_for`). Even on a connection of its own, redis-py writes through a
stream writer (`drain`) and reads through a stream reader, a few loop turns per reply. A
pool's reader, its settler and the ingest writer each send one command at a time, so each
gets a line: a connection that redis-py makes (address, TLS, password, database, the
handshake), after which the line speaks to the socket's transport itself. A command is
packed by hiredis and written at once; the replies are parsed by hiredis as they arrive and
handed to the waiting caller, with no task and no stream in between (`bench.redis_line`).

A line that fails (Redis away, slow, or closed the connection) is disconnected and the
error raised, so the caller backs off as it does for the client; the next command connects
afresh. Nothing is retried here: a command that may have reached Redis is not sent twice.

On a Redis Cluster a caller has a line per node, and a command goes to the node that serves
its key in the client's slot map. A line that fails has the map read afresh (the node may
have failed over); a command the cluster redirects (MOVED, ASK) was not run, and the caller
sends it again through the client, which follows the redirect and updates the map.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis._parsers import BaseParser
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    InvalidResponse,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

    from router.streams.client import RedisClient

INCOMPLETE = object()  # hiredis's answer while a reply is not whole yet


class Replies(asyncio.Protocol):
    """A connection's replies, parsed as they arrive and handed out in order."""

    def __init__(self, transport: asyncio.Transport, encoding: str | None) -> None:
        options: dict[str, Any] = {"encoding": encoding} if encoding else {}
        self._parser = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,  # redis-py's error classes, by the reply's code
            notEnoughData=INCOMPLETE,
            **options,
        )
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport = transport  # taken over from redis-py, connected and greeted
        self.lost: Exception | None = None

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Write a command; the future its reply (an error reply too) resolves."""
        waiter = asyncio.get_running_loop().create_future()
        if self.lost is not None:
            waiter.set_exception(self.lost)
            return waiter
        self._waiting.append(waiter)
        self._transport.write(hiredis.pack_command(args))
        return waiter

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        try:
            while (reply := parser.gets()) is not INCOMPLETE:
                self._answer(reply)
        except InvalidResponse as exc:  # out of step with Redis: this connection is done
            self._lose(exc)
            self._transport.close()

    def _answer(self, reply: Any) -> None:
        if not self._waiting:
            raise InvalidResponse("a reply from Redis that no command asked for")
        waiter = self._waiting.popleft()
        if not waiter.done():
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(RedisConnectionError(f"the connection to Redis was lost: {exc or 'closed'}"))

    def _lose(self, error: Exception) -> None:
        self.lost = self.lost or error
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)


class Line:
    """One connection, one command at a time."""

    def __init__(self, connection: AbstractConnection, timeout_s: float) -> None:
        self._connection = connection  # not connected yet; made like the client's
        self._replies: Replies | None = None
        self._lock = asyncio.Lock()
        self.timeout_s = timeout_s
        self._waiter: asyncio.Future[Any] | None = None  # the reply being waited for
        self._deadline = 0.0  # and when waiting for it becomes a timeout
        self._timer: asyncio.TimerHandle | None = None

    async def call(self, *args: Any, timeout_s: float | None = None) -> Any:
        """Send one command and return Redis's reply as it came (no response callbacks).

        An error reply raises its error (ResponseError, or the subclass redis-py has for it)
        and leaves the line as it is; any other failure, the timeout included, disconnects it
        first.
        """
        timeout_s = timeout_s or self.timeout_s
        async with self._lock:
            try:
                replies = self._replies
                if replies is None or replies.lost is not None:
                    async with asyncio.timeout(timeout_s):
                        replies = await self._connect()
                waiter = replies.send(args)
                self._watch(waiter, timeout_s)
                reply = await waiter
            except BaseException:
                await self.close()
                raise
            finally:
                self._waiter = None
        if isinstance(reply, Exception):  # an error reply: the line is still in step
            raise reply
        return reply

    def _watch(self, waiter: asyncio.Future[Any], timeout_s: float) -> None:
        """Fail `waiter` with TimeoutError once `timeout_s` has passed.

        One timer serves every call: it is set again only when it would fire too late, and
        when it fires before the reply waited for is due, it moves on to that one's deadline.
        Under steady traffic it fires once per timeout, not once per command.
        """
        loop = waiter.get_loop()
        self._waiter, self._deadline = waiter, loop.time() + timeout_s
        timer = self._timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(self._deadline, self._time_out)

    def _time_out(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        if loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError("Redis did not answer in time"))
        else:
            self._timer = loop.call_at(self._deadline, self._time_out)

    async def _connect(self) -> Replies:
        """Let redis-py connect and shake hands, then read the socket here."""
        connection = self._connection
        await connection.disconnect(nowait=True)  # a connection lost: its stream writer too
        await connection.connect()  # type: ignore[no-untyped-call]
        encoder = connection.encoder
        writer = cast("asyncio.StreamWriter", connection._writer)  # redis-py's, greeted
        transport = cast("asyncio.Transport", writer.transport)
        replies = Replies(transport, encoder.encoding if encoder.decode_responses else None)
        transport.set_protocol(replies)
        self._replies = replies
        return replies

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._replies, self._timer = None, None
        await self._connection.disconnect(nowait=True)


class Lines:
    """A line per caller, and on a cluster per caller and node, made on first use and closed
    together."""

    def __init__(self, redis: RedisClient, timeout_s: float = 5.0) -> None:
        self._redis = redis
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self.timeout_s = timeout_s  # a round trip; a blocking read adds its own block time
        self._lines: dict[str, Line] = {}
        self._reading_map = asyncio.Lock()

    def __getitem__(self, caller: str) -> Line:
        """`caller`'s line to a single server."""
        line = self._lines.get(caller)
        if line is not None:
            return line
        redis = self._redis
        if isinstance(redis, RedisCluster):
            raise TypeError("on a cluster a line goes to a key's node: use Lines.to")
        pool = redis.connection_pool
        return self._made(caller, pool.connection_class, pool.connection_kwargs)

    def to(self, caller: str, key: str) -> Line:
        """`caller`'s line to the server that holds `key`: on a cluster, the node that serves
        its slot in the client's map (SlotNotCoveredError while the map has none)."""
        if self._cluster is None:
            return self[caller]
        node = self._cluster.get_node_from_key(key)
        if node is None:  # only a replica asked for is None
            raise SlotNotCoveredError(f"no node serves {key!r}")
        name = f"{caller}@{node.name}"
        line = self._lines.get(name)
        if line is None:
            line = self._made(name, node.connection_class, node.connection_kwargs)
        return line

    async def lost(self) -> None:
        """A line failed: on a cluster, read the slot map afresh, since the node may be gone
        or replaced; the client learns of failures only on its own connections.

        One reading at a time: when a node goes, every line to it fails at once, and the
        callers that find a reading under way go on (they retry after their back-off).
        """
        if self._cluster is None or self._reading_map.locked():
            return
        async with self._reading_map:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await self._cluster.nodes_manager.initialize()

    def _made(
        self, name: str, connection_class: type[AbstractConnection], settings: dict[str, Any]
    ) -> Line:
        # No socket timeout of its own: the line times the whole round trip itself.
        connection = connection_class(**{**settings, "socket_timeout": None})
        line = self._lines[name] = Line(connection, self.timeout_s)
        return line

    async def close(self) -> None:
        lines, self._lines = list(self._lines.values()), {}
        await asyncio.gather(*(line.close() for line in lines))
