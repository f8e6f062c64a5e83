"""The latency runs' sender (`bench.paced`): every POST it reports was sent on its schedule,
carried its send time, and was counted by what the server answered.

The sender's figures are what the latency tables quote, so a sender that miscounts, or posts
what a service would not take, would mislead them silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from servers import free_port

from bench.paced import busiest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def events_server(refuse_every: int) -> AsyncIterator[tuple[int, list[Any]]]:
    """A server that keeps every events POST's topic and body; every `refuse_every`-th POST
    is answered 503."""
    received: list[Any] = []

    async def events(request: web.Request) -> web.Response:
        received.append((request.match_info["topic"], await request.json()))
        status = 503 if len(received) % refuse_every == 0 else 202
        return web.json_response({"accepted": []}, status=status)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/events/{topic:.*}", events)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, received
    finally:
        await runner.cleanup()


async def test_the_sender_posts_on_schedule_and_counts_what_was_answered() -> None:
    async with events_server(refuse_every=10) as (port, received):
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.paced", "--url", f"http://127.0.0.1:{port}",
            "--topic", "bench/x", "--rate", "400", "--seconds", "0.5", "--connections", "4",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert sender.stdin is not None
        assert sender.stdout is not None
        try:
            async with asyncio.timeout(30):
                assert (await sender.stdout.readline()).strip() == b"ready"
                went = time.time()
                sender.stdin.write(b"go\n")
                await sender.stdin.drain()
                result = json.loads(await sender.stdout.readline())
                assert await sender.wait() == 0
        finally:
            if sender.returncode is None:
                sender.kill()
                await sender.wait()

    assert result["sent"] == result["posts"] == 200
    assert (result["accepted"], result["refused"]) == (180, 20)  # every 10th answered 503
    assert result["errors"] == ["HTTP 503"] * 5  # the first few, kept as examples
    assert result["rtt"]["count"] == 200
    assert len(received) == 200
    assert {topic for topic, _ in received} == {"bench/x"}
    bodies = [body for _, body in received]
    assert sorted(body["seq"] for body in bodies) == list(range(200))
    sent_at = [body["timestamp"] for body in bodies]
    assert all(went <= at <= time.time() for at in sent_at)  # each stamped as it was sent
    assert max(sent_at) - min(sent_at) >= 0.4  # paced over the half second, not at once
    assert 1 <= result["busiest_5ms"] < 200  # 2 due in any 5 ms; all 200 at once is no pace


def test_the_busiest_window_counts_the_most_sends_within_it() -> None:
    assert busiest([], 0.005) == 0
    assert busiest([0.0, 0.010, 0.020], 0.005) == 1
    assert busiest([0.0, 0.001, 0.002, 0.0105, 0.011, 0.012, 0.013], 0.005) == 4
