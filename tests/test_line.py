"""Lines, the hot path's own connections, against a redis-server of the test's own: replies
as Redis sent them, error replies, and a line that fails (Redis gone, too slow, cancelled)
working again on its next command once Redis can answer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from servers import free_port, redis_binary, server_process, wait_for

from router.streams.line import Lines
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

PASSWORD = "line-pw"


def own_redis(port: int, folder: Path) -> AbstractAsyncContextManager[int]:
    return server_process(
        port, redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--requirepass", PASSWORD, "--dir", str(folder),
    )  # fmt: skip


@pytest.fixture
async def client() -> AsyncIterator[tuple[Redis, int]]:
    """A client on database 3 of a password-protected redis-server; the port, to restart it."""
    port = free_port()
    redis = Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/3")
    yield redis, port
    await redis.aclose()


@contextlib.asynccontextmanager
async def lines_of(redis: Redis, timeout_s: float = 5.0) -> AsyncIterator[Lines]:
    """Lines on `redis`, closed however the test ends."""
    lines = Lines(redis, timeout_s)
    try:
        yield lines
    finally:
        await lines.close()


async def test_a_line_connects_like_the_client_and_returns_replies_as_sent(
    client: tuple[Redis, int], tmp_path: Path
) -> None:
    redis, port = client
    async with lines_of(redis) as lines, own_redis(port, tmp_path):
        assert await lines["a"].call("SET", "k", "v") == b"OK"
        assert await redis.get("k") == b"v"  # the same database as the client's
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lines["a"].call("XLEN", "k")
        assert await lines["a"].call("GET", "k") == b"v"  # an error reply leaves it usable


async def test_a_line_fails_while_redis_is_away_and_works_once_it_is_back(
    client: tuple[Redis, int], tmp_path: Path
) -> None:
    redis, port = client
    async with lines_of(redis, timeout_s=2.0) as lines:
        async with own_redis(port, tmp_path):
            assert await lines["a"].call("PING") == b"PONG"
        with pytest.raises(UNAVAILABLE):  # gone: the kept connection is dead
            await lines["a"].call("PING")
        with pytest.raises(UNAVAILABLE):  # and nothing listens
            await lines["a"].call("PING")
        async with own_redis(port, tmp_path):
            assert await lines["a"].call("PING") == b"PONG"


async def test_a_timed_out_or_cancelled_command_leaves_no_reply_behind(
    client: tuple[Redis, int], tmp_path: Path
) -> None:
    """The reply to a command given up on must never be read as the next one's."""
    redis, port = client
    async with lines_of(redis) as lines, own_redis(port, tmp_path):
        await redis.xgroup_create("s", "g", id="0", mkstream=True)
        blocked = ("XREADGROUP", "GROUP", "g", "c", "BLOCK", 300, "STREAMS", "s", ">")
        with pytest.raises(TimeoutError):
            await lines["r"].call(*blocked, timeout_s=0.05)
        assert await lines["r"].call("ECHO", "after a timeout") == b"after a timeout"
        reading = asyncio.create_task(lines["r"].call(*blocked))

        async def blocked_in_redis() -> bool:
            return int((await redis.info("clients"))["blocked_clients"]) == 1

        await wait_for(blocked_in_redis, timeout=5)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await redis.xadd("s", {"e": "1"})  # would have been the blocked read's reply
        assert await lines["r"].call("ECHO", "after a cancel") == b"after a cancel"


async def test_a_line_refused_by_redis_says_so(client: tuple[Redis, int], tmp_path: Path) -> None:
    _, port = client
    wrong = Redis.from_url(f"redis://:wrong@127.0.0.1:{port}/3")
    async with lines_of(wrong) as lines, own_redis(port, tmp_path):
        with pytest.raises((ResponseError, RedisConnectionError), match=r"(?i)pass|auth"):
            await lines["a"].call("PING")
    await wrong.aclose()
