"""Connections to Redis that report a closed socket as a lost connection, on uvloop too.

When Redis closes a connection (it restarted, or a cluster node went away), a command may
write to the closed transport before the loop has told redis-py. asyncio's transport drops
such a write, and the read after it fails as a lost connection, which every caller backs
off from (`UNAVAILABLE`). uvloop's raises RuntimeError instead ("the handler is closed"),
which reads as a bug: a pool would crash and restart instead of waiting for Redis. These
subclasses of redis-py's connections raise ConnectionError there, as asyncio's loop leads
to; the clients of `router.streams.client` make theirs.
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


class LostWhenClosed(AbstractConnection):
    """A write to a transport that was closed is a lost connection, whatever the loop."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        writer = self._writer  # redis-py forgets it when the write fails
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            if writer is None or not writer.transport.is_closing():
                raise
            raise RedisConnectionError("the connection to Redis was closed") from exc


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
