"""The test servers and fixtures: isolation, persistence across restarts, fault injection."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from servers import RedisServer, wait_for

pytestmark = pytest.mark.integration


def test_session_server_is_ours(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_server.port != 6379
    assert redis_url == redis_server.url


@pytest.mark.parametrize("run", ["first", "second"])
async def test_each_test_starts_empty(redis: Redis, run: str) -> None:
    """Whichever of the two runs second sees no key from the other."""
    assert await redis.dbsize() == 0
    await redis.set(f"written-by-{run}", 1)


async def test_restart_keeps_data(private_redis: RedisServer) -> None:
    async with Redis.from_url(private_redis.url) as client:
        await client.set("kept", "yes")
    await private_redis.restart()
    async with Redis.from_url(private_redis.url) as client:
        assert await client.get("kept") == b"yes"


async def test_kill_then_start(private_redis: RedisServer) -> None:
    async with Redis.from_url(private_redis.url) as client:
        await private_redis.kill()
        assert private_redis.pid is None
        with pytest.raises(RedisConnectionError):
            await client.ping()
        await private_redis.start()
        assert await wait_for(client.ping)  # the same client reconnects to the same URL


async def test_wait_for_returns_the_truthy_value() -> None:
    calls: list[int] = []

    async def third_call() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await wait_for(third_call) == 3


async def test_wait_for_times_out_with_a_message() -> None:
    with pytest.raises(AssertionError, match="the impossible"):
        await wait_for(lambda: False, timeout=0.05, message="the impossible")
