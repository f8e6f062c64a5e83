"""Connections to Redis that report a closed socket as a lost connection, whatever closed it.

A command can find its connection's socket closed before it goes out, in two ways, and
redis-py reports neither as a lost connection, which every caller backs off from
(`UNAVAILABLE`); both read as bugs instead, and a pool crashed and restarted rather than
wait for Redis:
- Redis closed it (it restarted, a cluster node went away) and the loop closed the
  transport: uvloop raises RuntimeError for the write ("the handler is closed"), where
  asyncio's drops it and the read after it fails as a lost connection;
- another task disconnected it meanwhile (redis-py's cluster client does, for every
  connection to a node that failed): the write finds no stream and raises AttributeError.
These subclasses of redis-py's connections raise ConnectionError there. The clients of
`router.streams.client` make theirs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from collections.abc import Iterable

C = TypeVar("C", bound=AbstractConnection)
CLOSED_HANDLE = "the handler is closed"  # uvloop's words for a transport it has closed
WRITER_CALLS = frozenset({"writelines", "drain"})  # what a send calls on its stream writer


class LostWhenClosed(AbstractConnection):
    """A command whose socket was closed before it went out is a lost connection."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except (RuntimeError, AttributeError) as exc:  # redis-py has disconnected by now
            if not socket_gone(exc):
                raise
            raise RedisConnectionError("the connection to Redis was closed") from exc


def socket_gone(exc: RuntimeError | AttributeError) -> bool:
    """uvloop's error for a write to a transport it closed, or the one a send meets when
    another task took its stream writer away; any other error is a bug, and stays one."""
    if isinstance(exc, AttributeError):
        return exc.obj is None and exc.name in WRITER_CALLS
    return CLOSED_HANDLE in str(exc)


class TcpConnection(LostWhenClosed, Connection):
    """redis-py's TCP connection, `LostWhenClosed`."""


class TlsConnection(LostWhenClosed, SSLConnection):
    """redis-py's TLS connection, `LostWhenClosed`."""


class UnixConnection(LostWhenClosed, UnixDomainSocketConnection):
    """redis-py's Unix socket connection, `LostWhenClosed`."""


_OURS: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: TcpConnection,
    SSLConnection: TlsConnection,
    UnixDomainSocketConnection: UnixConnection,
}


def lost_when_closed(connection_class: type[C]) -> type[C]:
    """Ours in place of the redis-py connection class a URL chose, a subclass of it (any
    other class is kept)."""
    return cast("type[C]", _OURS.get(connection_class, connection_class))
