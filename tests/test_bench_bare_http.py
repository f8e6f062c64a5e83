"""The hand-written HTTP loop (`bench.bare_http`), the floor the single-event POST latency
reads against: it times every event it accepted, once, from its handler to its XACK, and
leaves none of them pending.

A floor that dropped or double-counted events, or timed the warm-up, would make the
latency table's comparison say something untrue.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from bench.bare_http import run_bare_http
from bench.latency import LatencySettings, post_paced
from bench.throughput import GROUP

if TYPE_CHECKING:
    from pathlib import Path


async def test_the_hand_written_loop_times_each_accepted_event_once(
    redis_url: str, tmp_path: Path
) -> None:
    stream = f"bench:{{bare-http-{uuid.uuid4().hex}}}:stream"
    settings = LatencySettings(rate=200, connections=4)

    async def send(base: str, seconds: float) -> dict[str, Any]:
        return await post_paced(base, settings, seconds, 1, tmp_path)

    result = await run_bare_http(
        redis_url, send=send, warmup_s=0.2, seconds=0.5, target_s=2.0, logs=tmp_path, stream=stream
    )

    assert result["sent"] == result["accepted"] == 100
    assert result["events"] == result["latency"]["count"] == 100  # the warm-up's 40 not timed
    assert 0 < result["latency"]["p50_ms"] <= result["latency"]["max_ms"] < 2_000
    assert result["share_within"] == 1.0  # 2 s: every event, on any machine
    assert result["stalls"]["wakes"] > 0  # the machine was watched meanwhile
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.xlen(stream) == 140  # warm-up and measured run, each event once
        assert (await redis.xpending(stream, GROUP))["pending"] == 0  # every one acknowledged
    finally:
        await redis.delete(stream)
        await redis.aclose()
