"""Lines: a connection of its own for each caller on the hot path, one command at a time.

Through redis-py's client, a command borrows a pooled connection (a lock and a timeout),
runs under a retry wrapper, and, on Python 3.11 with a socket timeout, sends from a task of
its own (`asyncio.wait_for`). That is about twice what the command itself costs: 107-132 us
against 50-53 us of CPU for one XACK here (`bench.redis_line`). A pool's reader, its settler
and the ingest writer each send one command at a time, so each gets a line: its own
connection, made like the pool's (address, TLS, password, database), sent to and read from
directly, under one timeout for the whole round trip.

A line that fails (Redis away, slow, or closed the connection) is disconnected and the
error raised, so the caller backs off as it does for the client; the next command connects
afresh. Nothing is retried here: a command that may have reached Redis is not sent twice.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection


class Line:
    """One connection, one command at a time."""

    def __init__(self, redis: Redis, timeout_s: float) -> None:
        pool = redis.connection_pool
        # No socket timeout of its own: the line times the whole round trip itself.
        options = {**pool.connection_kwargs, "socket_timeout": None}
        self._connection: AbstractConnection = pool.connection_class(**options)
        self._lock = asyncio.Lock()
        self.timeout_s = timeout_s

    async def call(self, *args: Any, timeout_s: float | None = None) -> Any:
        """Send one command and return Redis's reply as it came (no response callbacks).

        An error reply raises ResponseError and leaves the line as it is; any other failure,
        the timeout included, disconnects it first.
        """
        connection = self._connection
        async with self._lock:
            try:
                async with asyncio.timeout(timeout_s or self.timeout_s):
                    await connection.send_packed_command(
                        connection.pack_command(*args), check_health=False
                    )
                    return await connection.read_response()
            except ResponseError:
                raise
            except BaseException:
                await connection.disconnect(nowait=True)
                raise

    async def close(self) -> None:
        await self._connection.disconnect(nowait=True)


class Lines:
    """A line per caller, made on first use and closed together."""

    def __init__(self, redis: Redis, timeout_s: float = 5.0) -> None:
        self._redis = redis
        self.timeout_s = timeout_s  # a round trip; a blocking read adds its own block time
        self._lines: dict[str, Line] = {}

    def __getitem__(self, caller: str) -> Line:
        line = self._lines.get(caller)
        if line is None:
            line = self._lines[caller] = Line(self._redis, self.timeout_s)
        return line

    async def close(self) -> None:
        lines, self._lines = list(self._lines.values()), {}
        await asyncio.gather(*(line.close() for line in lines))
