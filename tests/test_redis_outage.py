"""The service while its Redis goes away and comes back (a private redis-server with AOF).

While Redis is down, HTTP refuses events with 503 + Retry-After and /readyz says not ready;
when it is back, events are accepted again and nothing accepted before the outage is lost.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from actors_for_tests import probe
from helpers import Serve, processed, routed_class, sample
from redis.asyncio import Redis
from servers import RedisServer, wait_for

from router.config import Config, parse_config
from router.streams import keys

if TYPE_CHECKING:
    import aiohttp

    from router.service.service import Service

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("probes")]


def make_config(redis_url: str, concurrency: int = 4) -> Config:
    return parse_config(
        f"""
service: {{drain_timeout_s: 10}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
lanes: [{{name: high}}]
"""
        + routed_class("work", "actors_for_tests:Recorder", "name: work", concurrency=concurrency)
    )


async def post(
    http: aiohttp.ClientSession, service: Service, body: Any
) -> tuple[int, dict[str, str], Any]:
    """POST a JSON body to work/1; (status, headers, JSON reply)."""
    async with http.post(
        f"http://127.0.0.1:{service.http_port}/events/work/1", data=json.dumps(body).encode()
    ) as response:
        return response.status, dict(response.headers), await response.json()


async def readyz(http: aiohttp.ClientSession, service: Service) -> tuple[int, Any]:
    async with http.get(f"http://127.0.0.1:{service.http_port}/readyz") as response:
        return response.status, await response.json()


async def test_while_redis_is_down_events_are_refused_with_503_and_accepted_again_after(
    serve: Serve, private_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    work = probe("work")
    async with serve(make_config(private_redis.url)) as service:
        status, _, reply = await post(http, service, {"key": "before"})
        assert status == 202
        before = reply["accepted"][0]["id"]
        await wait_for(lambda: work.handled_ids() == [before])

        await private_redis.stop()
        status, headers, reply = await post(http, service, {"key": "during"})
        assert status == 503
        assert headers.get("Retry-After") == "1"
        assert "unavailable" in reply["error"]
        assert sample(service, "switchyard_redis_errors_total", {"operation": "publish"}) == 1
        status, ready = await readyz(http, service)
        assert status == 503
        assert ready["ready"] is False
        assert any("redis" in problem for problem in ready["problems"])

        await private_redis.start()

        async def ready_again() -> bool:
            return (await readyz(http, service))[0] == 200

        await wait_for(ready_again, timeout=10)
        status, _, reply = await post(http, service, {"key": "after"})
        assert status == 202
        after = reply["accepted"][0]["id"]
        await wait_for(lambda: work.handled_ids() == [before, after], timeout=10)
        await wait_for(lambda: processed(service, "work") == 2)


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_events_accepted_before_an_outage_are_all_handled_after_it(
    serve: Serve, private_redis: RedisServer, http: aiohttp.ClientSession, outage: str
) -> None:
    """A graceful stop, or SIGKILL (the AOF is written before Redis replies, so a killed
    process loses nothing the service was told was stored)."""
    work = probe("work")
    work.gate.clear()
    # One worker: the first event is held in the handler, the second waits in the stream.
    async with serve(make_config(private_redis.url, concurrency=1)) as service:
        status, _, reply = await post(http, service, [{"key": "held"}, {"key": "queued"}])
        assert status == 202
        ids = [accepted["id"] for accepted in reply["accepted"]]
        await wait_for(lambda: work.active == 1)

        await (private_redis.stop() if outage == "stop" else private_redis.kill())
        work.gate.set()  # the held handler finishes while its ack cannot be written
        await wait_for(lambda: work.handled_ids() == ids[:1])
        await wait_for(
            lambda: sample(service, "switchyard_redis_errors_total", {"operation": "ack"}) >= 1
        )
        await private_redis.start()

        await wait_for(lambda: processed(service, "work") == 2, timeout=15)
        assert work.handled_ids() == ids
        async with Redis.from_url(private_redis.url) as redis:
            summary: Any = await redis.xpending(keys.stream("work"), "switchyard")
            assert summary["pending"] == 0
            assert await redis.xlen(keys.stream("work")) == 2
