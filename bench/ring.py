"""Ring benchmark: a doorbell ring to the owner's webhook, quiet and with the low lane flooded.

    .venv/bin/python -m bench.ring [--rings 300] [--flood 200000] [--quick]

One command starts a private redis-server, then for each scenario a webhook receiver in its
own process (the demo's, which checks every signature) and the service in-process with the
default config's ring class (`doorbell.button_press`: OwnerAlert, queue mode, 32 at once):

  quiet                     rings alone, posted 50 a second over HTTP
  flooded                   the same rings while a load generator in its own process posts
                            `--flood` readings (batches of 500, 8 connections) to a low lane
  flooded_high_lane_worker  the same, with the high lane's pools in a worker process of
                            their own (`workers: 1`), away from the ingress

Latency is from the ring's ingest time (the alert's `at`) to the receiver reading the signed
POST, on the same clock. Prints p50/p99 of both runs and the flooded/quiet ratio of p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from bench.harness import (
    BenchError,
    child,
    config_head,
    expect_ready,
    progress,
    read_line,
    running,
    say,
)
from router.config import parse_config
from router.embedded.process import free_port
from router.embedded.redis import EmbeddedRedis
from router.notify.device import Device
from router.notify.receiver import WebhookReceiver
from router.service.service import Service

if TYPE_CHECKING:
    from asyncio.subprocess import Process
    from collections.abc import Sequence

    from router.config import Config

SECRET = "bench-secret"
RINGS_PER_S = 50
SCENARIOS = (  # name, flooded, high-lane workers
    ("quiet", False, 0),
    ("flooded", True, 0),
    ("flooded_high_lane_worker", True, 1),
)


class TimedReceiver(WebhookReceiver):
    """The demo's receiver, noting when each alert was read."""

    def __init__(self) -> None:
        super().__init__(SECRET)
        self.latencies: list[float] = []

    async def receive(self, request: web.Request) -> web.Response:
        response = await super().receive(request)
        if response.status == 200 and self.alerts:
            self.latencies.append(time.time() - float(self.alerts[-1]["at"]))
        return response


def ring_config(url: str, workers: int = 0) -> Config:
    text = (
        config_head("bench", url, "switchyard", http=True)
        + f"""\
lanes: [{{name: high, workers: {workers}}}, {{name: low}}]
routes:
  - {{topic: "doorbell/+/button_press", class: doorbell.button_press, key: topic.1}}
  - {{topic: "doorbell/+/temperature", class: flood}}
classes:
  doorbell.button_press:
    lane: high
    actor: actors.doorbell:OwnerAlert
    mode: queue
    concurrency: 32
  flood: {{lane: low, actor: "bench.noop:NoOp", mode: queue, concurrency: 256}}
notify: {{webhook_secret: {SECRET}, timeout_ms: 2000, backchannel: false}}
"""
    )
    return parse_config(text, "<bench>", environ={})


async def one_run(config: Config, rings: int, flood: int) -> list[float]:
    port = free_port()
    receiver_command = (sys.executable, "-m", "bench.ring", "--receiver", str(port))
    async with (
        child(*receiver_command) as receiver,
        running(Service(config, registry=CollectorRegistry())) as service,
    ):
        await expect_ready(receiver, "webhook receiver")
        assert service.notifier is not None
        webhook = f"http://127.0.0.1:{port}/alerts"
        await service.notifier.registry("doorbell").add(Device("door", "bench", webhook=webhook))
        base = f"http://127.0.0.1:{service.http_port}"
        if flood:
            command = (
                sys.executable, "-m", "bench.loadgen", "--url", base,
                "--topic", "doorbell/d1/temperature", "--events", str(flood),
                "--batch", "500", "--connections", "8",
            )  # fmt: skip
            async with child(*command) as generator:
                await expect_ready(generator, "load generator")
                await say(generator, "go")
                await _ring(base, rings)
        else:
            await _ring(base, rings)
        return await _latencies(receiver, service, rings)


async def _ring(base: str, rings: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(rings):
            async with http.post(f"{base}/events/doorbell/door/button_press", json={}) as reply:
                if reply.status != 202:
                    raise BenchError(f"ring refused: {reply.status} {await reply.text()}")
            await asyncio.sleep(1 / RINGS_PER_S)


async def _latencies(receiver: Process, service: Service, rings: int) -> list[float]:
    deadline = time.monotonic() + 60
    while True:
        await say(receiver, "report")
        latencies: list[float] = json.loads(await read_line(receiver))
        if len(latencies) >= rings:
            return latencies
        if time.monotonic() > deadline:
            raise BenchError(f"{len(latencies)}/{rings} rings reached the webhook")
        await asyncio.sleep(0.2)


async def receive(port: int) -> None:
    """The receiver's process: serve, say ready, answer each "report" with the latencies."""
    receiver = TimedReceiver()
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "report":
            print(json.dumps(receiver.latencies), flush=True)
    await runner.cleanup()


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


async def bench(rings: int, flood: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-ring-") as temp:
        redis = EmbeddedRedis(Path(temp) / "redis", appendonly=False)
        await redis.start()
        results: dict[str, Any] = {"rings": rings, "flood": flood}
        try:
            for name, load, workers in SCENARIOS:
                progress(f"{name}: {rings} rings" + (f" beside {flood:,} readings" if load else ""))
                config = ring_config(redis.url, workers)
                results[name] = _summary(await one_run(config, rings, flood if load else 0))
        finally:
            await redis.stop()
    results["p99_ratio"] = results["flooded"]["p99_ms"] / results["quiet"]["p99_ms"]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ring", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--rings", type=int, default=300)
    parser.add_argument("--flood", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="100 rings, 50,000 readings")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)  # the child's port
    args = parser.parse_args(argv)
    if args.receiver:
        asyncio.run(receive(args.receiver))
        return 0
    rings, flood = (100, 50_000) if args.quick else (args.rings, args.flood)
    try:
        result = asyncio.run(bench(rings, flood))
    except BenchError as exc:
        print(f"bench.ring: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    shown = ", ".join(
        f"{name} {result[name]['p50_ms']:.1f}/{result[name]['p99_ms']:.1f} ms"
        for name, _, _ in SCENARIOS
    )
    print(f"ring -> webhook p50/p99: {shown} (flooded/quiet p99 x{result['p99_ratio']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
