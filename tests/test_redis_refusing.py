"""Redis that answers but refuses writes: out of memory under `maxmemory` with `noeviction`.

It must look exactly like Redis being away: HTTP answers 503 with Retry-After, /readyz says
why, MQTT holds its messages unacknowledged, nothing is written past the limit, and once
memory is freed everything held arrives.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from actors_for_tests import probe
from helpers import THINGS, client_id, publish, sample, subscribed
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError
from servers import mqtt_service_yaml, wait_for

from router.config import parse_config
from router.streams import keys

if TYPE_CHECKING:
    import aiohttp
    from helpers import Serve
    from servers import BrokerServer, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("probes")]

FILLER = "filler:"


async def fill_to_the_limit(redis: Redis, count: int = 60) -> int:
    """Write 3 MB of filler, then set `maxmemory` 1 MB below what is used: every write is
    refused from now on, however small (filling up to the limit leaves room that comes and
    goes with client buffers)."""
    for n in range(count):
        await redis.set(f"{FILLER}{n}", b"x" * 50_000)
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", used - 1_000_000)
    with pytest.raises(OutOfMemoryError):
        await redis.set("probe", b"x")
    return count


async def free(redis: Redis, count: int) -> None:
    await redis.delete(*(f"{FILLER}{n}" for n in range(count)))
    await redis.config_set("maxmemory", 0)


async def test_redis_out_of_memory_is_redis_unavailable_and_nothing_is_lost(
    serve: Serve, private_redis: RedisServer, mosquitto: BrokerServer, http: aiohttp.ClientSession
) -> None:
    """Main answered HTTP 500 with /readyz 200, wrote events carrying an `event_id` past
    `maxmemory`, and its MQTT ingress crashed and lost 20 of 20 messages."""
    config = parse_config(
        mqtt_service_yaml(private_redis.url, mosquitto.url, client_id=client_id("oom"), body=THINGS)
    )
    base = ""
    async with serve(config) as service, Redis.from_url(private_redis.url) as redis:
        base = f"http://127.0.0.1:{service.http_port}"
        await subscribed(service)
        filler = await fill_to_the_limit(redis)

        for body in ({"key": "a", "n": 1}, {"key": "b", "n": 2, "event_id": "with-id"}):
            async with http.post(f"{base}/events/things/1", json=body) as response:
                assert response.status == 503, await response.text()
                assert response.headers["Retry-After"]
        async with http.get(f"{base}/readyz") as response:
            reply: Any = await response.json()
            assert response.status == 503
            assert any("maxmemory" in problem for problem in reply["problems"]), reply
        assert await redis.xlen(keys.stream("things")) == 0  # nothing written past the limit
        assert await redis.zcard(keys.seen("things")) == 0

        messages = [("things/2", json.dumps({"key": "m", "n": n}).encode()) for n in range(20)]
        await publish(mosquitto, messages)
        errors = {"operation": "mqtt_publish"}
        await wait_for(lambda: sample(service, "switchyard_redis_errors_total", errors) >= 1)
        assert probe("things").handled == []

        await free(redis, filler)
        await wait_for(lambda: len(probe("things").handled) == 20, timeout=20)
        assert sorted(e.payload["n"] for e in probe("things").handled) == list(range(20))
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
        async with http.post(f"{base}/events/things/1", json={"key": "a", "n": 99}) as response:
            assert response.status == 202
        assert sample(service, "switchyard_mqtt_connected") == 1
        assert sample(service, "switchyard_pool_restarts_total", {"class": "things"}) == 0
