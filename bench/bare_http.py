"""The floor for a single-event POST: a hand-written HTTP service on this machine.

What a team glues together instead of Switchyard: an aiohttp app whose one handler decodes
the JSON body and XADDs the event with redis.asyncio, answering 202 once Redis has it, and
the bare loop's consumer (XREADGROUP, one XACK per read). It runs in the bench's process,
as the Service does, and `bench.paced` POSTs to it from another process exactly as it does
to Switchyard. Timed from the handler's start to the XACK's reply on one clock (exact), like
Switchyard's ingest to ack.

On a two-core machine the sender, redis-server and the service take turns on the cores:
this row says what tail a Python HTTP service gets here at all, so that Switchyard's
1-event/POST figures read against it rather than against a loop with no HTTP in it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgpack
import orjson
from aiohttp import web
from redis.asyncio import Redis

from bench.harness import (
    BenchError,
    Entries,
    Watch,
    bare_consume,
    percentiles,
    share_within,
    stall_watch,
    to_the_end,
)
from bench.throughput import GROUP
from router.embedded.process import free_port

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

STREAM = "bench:{bare-http}:stream"
ACCEPTED = orjson.dumps({"accepted": 1})
DRAIN_S = 10.0  # for the last accepted events to be acknowledged


def application(redis: Redis, stream: str) -> web.Application:
    """One route, no middleware: the leanest aiohttp service a team would write."""

    async def post(request: web.Request) -> web.Response:
        started = time.perf_counter()
        event = orjson.loads(await request.read())
        fields = {"e": msgpack.packb(event), "t": repr(started)}
        await redis.xadd(stream, fields)  # type: ignore[arg-type]
        return web.Response(body=ACCEPTED, status=202, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/events/{topic:.+}", post)
    app.router.add_get("/healthz", health)
    return app


class Acks:
    """The consumer's acknowledgements: the latency of each event whose handler started
    after `measure()`, and an event set once `expected` of them are in."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self._since = float("inf")
        self._expected: int | None = None
        self._all_in = asyncio.Event()

    def measure(self) -> None:
        self._since = time.perf_counter()

    def __call__(self, entries: Entries) -> None:
        now = time.perf_counter()
        stamps = (float(fields[b"t"]) for _, fields in entries)
        self.latencies.extend(now - t for t in stamps if t >= self._since)
        if self._expected is not None and len(self.latencies) >= self._expected:
            self._all_in.set()

    async def wait_for(self, expected: int, timeout_s: float) -> None:
        """Until `expected` measured events are acknowledged; BenchError after `timeout_s`."""
        self._expected = expected
        if len(self.latencies) >= expected:
            return
        try:
            await asyncio.wait_for(self._all_in.wait(), timeout_s)
        except TimeoutError:
            raise BenchError(
                f"the hand-written HTTP loop acknowledged {len(self.latencies)} of the "
                f"{expected} events it accepted"
            ) from None


async def run_bare_http(
    url: str,
    *,
    send: Callable[[str, float], Awaitable[dict[str, Any]]],
    warmup_s: float,
    seconds: float,
    target_s: float,
    logs: Path,
    stream: str = STREAM,
) -> dict[str, Any]:
    """Serve, warm up, then measure one paced run of `send(base_url, seconds)` (bench.paced's
    result); every event it accepted must be acknowledged."""
    redis, consumer = Redis.from_url(url), Redis.from_url(url)
    runner = web.AppRunner(application(redis, stream), access_log=None, handle_signals=False)
    acks = Acks()
    try:
        await consumer.xgroup_create(stream, GROUP, id="0", mkstream=True)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        consuming = asyncio.create_task(
            bare_consume(consumer, stream, GROUP, None, on_acked=acks),
            name="bare-http-consumer",
        )
        try:
            if warmup_s > 0:
                await send(base, warmup_s)
            async with stall_watch(logs) as stalls:
                acks.measure()
                watch = Watch.start()
                paced = await send(base, seconds)
                wall, cpu = watch.elapsed()
                stolen = watch.stolen_share()
            await acks.wait_for(paced["accepted"], DRAIN_S)
        finally:
            consuming.cancel()
            await asyncio.gather(consuming, return_exceptions=True)
    finally:
        await to_the_end(runner.cleanup())
        await to_the_end(redis.aclose())
        await to_the_end(consumer.aclose())
    latencies = acks.latencies
    if not latencies:
        raise BenchError(f"the hand-written HTTP loop accepted no events: {paced['errors']}")
    return {
        "events": len(latencies),
        "sent": paced["sent"],
        "accepted": paced["accepted"],
        "latency": percentiles(latencies),
        "share_within": share_within(latencies, target_s),
        "cpu_share": round(cpu / wall, 3),
        "sender_cpu_share": round(paced["cpu_seconds"] / wall, 3),
        "sender_busiest_5ms": paced["busiest_5ms"],
        "stolen_share": stolen,
        "stalls": stalls,
    }
