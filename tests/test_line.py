"""Lines, the hot path's own connections, against a redis-server of the test's own: replies
as Redis sent them, error replies, and a line that fails (Redis gone, too slow, cancelled)
working again on its next command once Redis can answer."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, InvalidResponse, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from servers import free_port, redis_binary, server_process, wait_for

from router.streams.line import Lines, Replies
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


async def one_blocked(redis: Redis) -> bool:
    """Redis holds one client blocked: a read waiting for entries."""
    return int((await redis.info("clients"))["blocked_clients"]) == 1


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

        await wait_for(functools.partial(one_blocked, redis), timeout=5)
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


async def test_a_short_timeout_fires_on_time_after_a_long_one_was_set(
    client: tuple[Redis, int], tmp_path: Path
) -> None:
    """The line's one timer is set for the earliest deadline waited on: a command with a
    short timeout is not left to the timer of a longer one before it."""
    redis, port = client
    async with lines_of(redis, timeout_s=30.0) as lines, own_redis(port, tmp_path):
        await redis.xgroup_create("s", "g", id="0", mkstream=True)
        assert await lines["r"].call("PING") == b"PONG"  # its timer: 30 s from now
        blocked = ("XREADGROUP", "GROUP", "g", "c", "BLOCK", 0, "STREAMS", "s", ">")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await lines["r"].call(*blocked, timeout_s=0.1)
        assert loop.time() - started < 10.0  # not the 30 s timer's
        assert await lines["r"].call("ECHO", "next") == b"next"


async def test_commands_that_each_answer_in_time_never_time_out_together(
    client: tuple[Redis, int], tmp_path: Path
) -> None:
    """Over several timeouts' worth of commands, each answered at once, none times out: the
    timer that fires meanwhile looks at the command waiting then, not at the first one."""
    redis, port = client
    async with lines_of(redis, timeout_s=0.2) as lines, own_redis(port, tmp_path):
        loop = asyncio.get_running_loop()
        until = loop.time() + 1.0
        answered = 0
        while loop.time() < until:
            assert await lines["a"].call("PING") == b"PONG"
            answered += 1
        assert answered > 10


async def test_a_command_waiting_when_redis_goes_away_fails_at_once(
    client: tuple[Redis, int], tmp_path: Path
) -> None:
    redis, port = client
    async with lines_of(redis, timeout_s=60.0) as lines:
        async with own_redis(port, tmp_path):
            await redis.xgroup_create("s", "g", id="0", mkstream=True)
            blocked = ("XREADGROUP", "GROUP", "g", "c", "BLOCK", 0, "STREAMS", "s", ">")
            reading = asyncio.create_task(lines["r"].call(*blocked))

            await wait_for(functools.partial(one_blocked, redis), timeout=5)
        with pytest.raises(UNAVAILABLE):  # well before its 60 s timeout
            await asyncio.wait_for(reading, timeout=30)
        async with own_redis(port, tmp_path):
            assert await lines["r"].call("PING") == b"PONG"


class Socket(asyncio.Transport):
    """What a Replies writes and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        self.closed = True


async def test_replies_come_back_in_order_and_error_replies_as_redis_py_names_them() -> None:
    socket = Socket()
    replies = Replies(socket, None)
    first, second = replies.send(("GET", "k")), replies.send(("XLEN", "k"))
    assert socket.sent == [b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"*2\r\n$4\r\nXLEN\r\n$1\r\nk\r\n"]
    replies.data_received(b"$1\r\nv\r\n-LOADING Redis is loading")
    assert first.result() == b"v"
    assert not second.done()  # half a reply: it waits for the rest
    replies.data_received(b" the dataset\r\n")
    assert isinstance(second.result(), BusyLoadingError)
    assert not socket.closed


async def test_a_reply_out_of_step_fails_what_waits_and_closes_the_connection() -> None:
    socket = Socket()
    replies = Replies(socket, None)
    replies.data_received(b"+OK\r\n")  # no command asked for it
    assert socket.closed
    with pytest.raises(InvalidResponse):
        await replies.send(("PING",))
    garbled = Socket()
    replies = Replies(garbled, None)
    waiting = replies.send(("PING",))
    replies.data_received(b"?what\r\n")
    assert garbled.closed
    with pytest.raises(InvalidResponse):
        await waiting
