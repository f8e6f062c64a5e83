"""Media benchmark: a clip PUT through the service into its store, against a plain file copy
of the same bytes on the same disk, and the service's memory while the clip streams through.

    .venv/bin/python -m bench.media [--mib 1024] [--runs 3] [--quick]

One command starts a private redis-server and the service as a process of its own (`python
-m router run`, media store in a temp directory, so its RSS is the service's alone), writes a
source file of `--mib` MiB, then runs each scenario `--runs` times, interleaved, and prints
medians:

  copy    the source file copied to the same disk (`shutil.copyfile`) and fsynced, as the
          store fsyncs what it publishes
  upload  the source file PUT to /media/doorbell/bench/<n> over HTTP, read from disk a MiB at
          a time by a client in this process (streamed, chunked: no Content-Length), until
          the service answers 201: received, hashed (SHA-256), written, fsynced, published,
          its event in Redis

The ratio upload/copy is the figure; the service's RSS is sampled every 20 ms during each
upload, and its growth over the idle figure says whether memory stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench.harness import BenchError, child, progress, rss_mb
from router.embedded.redis import EmbeddedRedis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

MiB = 1 << 20
READY_S = 30.0


def service_yaml(redis_url: str, store: Path, port: int) -> str:
    return f"""
service: {{drain_timeout_s: 5, log_format: json}}
redis: {{url: "{redis_url}"}}
http: {{port: {port}}}
lanes: [{{name: low}}]
routes:
  - {{topic: "doorbell/+/video_upload", class: doorbell.video_upload, key: topic.1}}
classes:
  doorbell.video_upload: {{lane: low, actor: "actors.doorbell:ClipIndex"}}
media:
  store: "{store}"
  max_bytes: {1 << 40}
  uploads:
    - {{path: "doorbell/+/+", topic: "doorbell/{{1}}/{{kind}}_upload"}}
"""


def copy(source: Path, target: Path) -> float:
    """Seconds to copy `source` to `target` and fsync it."""
    started = time.perf_counter()
    shutil.copyfile(source, target)
    descriptor = os.open(target, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


async def chunks(source: Path) -> AsyncIterator[bytes]:
    with source.open("rb") as file:
        while data := await asyncio.to_thread(file.read, MiB):
            yield data


async def upload(http: aiohttp.ClientSession, url: str, source: Path, pid: int) -> dict[str, Any]:
    """Seconds to PUT `source` and its 201, and the service's peak RSS meanwhile (MB)."""
    peak = 0.0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            found = rss_mb(pid)
            peak = max(peak, found[0] if found else 0.0)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    try:
        headers = {"Content-Type": "video/mp4"}
        async with http.put(url, data=chunks(source), headers=headers) as response:
            if response.status != 201:
                raise BenchError(f"upload answered {response.status}: {await response.text()}")
        seconds = time.perf_counter() - started
    finally:
        done.set()
        await sampler
    return {"seconds": seconds, "peak_rss_mb": peak}


async def ready(http: aiohttp.ClientSession, port: int) -> None:
    deadline = time.perf_counter() + READY_S
    while time.perf_counter() < deadline:
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise BenchError("the service did not start")


async def bench(mib: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-media-") as temp:
        root = Path(temp)
        source = root / "source.bin"
        block = os.urandom(MiB)
        with source.open("wb") as file:
            for _ in range(mib):
                file.write(block)
        redis = EmbeddedRedis(root / "redis", appendonly=False)
        await redis.start()
        port = _free_port()
        config = root / "switchyard.yaml"
        config.write_text(service_yaml(redis.url, root / "media", port))
        command = (sys.executable, "-m", "router", "run", "--config", config)
        rates: dict[str, list[float]] = {"copy": [], "upload": []}
        peaks: list[float] = []
        try:
            async with (
                child(*command, stdin=False, stdout=False, log=root / "service.log") as service,
                aiohttp.ClientSession() as http,
            ):
                await ready(http, port)
                found = rss_mb(service.pid)
                idle = found[0] if found else 0.0
                for run in range(runs):
                    seconds = await asyncio.to_thread(copy, source, root / "copy.bin")
                    rates["copy"].append(mib / seconds)
                    url = f"http://127.0.0.1:{port}/media/doorbell/bench/clip-{run}"
                    result = await upload(http, url, source, service.pid)
                    rates["upload"].append(mib / result["seconds"])
                    peaks.append(result["peak_rss_mb"])
                    progress(
                        f"  run {run + 1}/{runs}: copy {rates['copy'][-1]:,.0f} MiB/s, upload "
                        f"{rates['upload'][-1]:,.0f} MiB/s, RSS peak {peaks[-1]:.0f} MB"
                    )
                    (root / "media" / "doorbell" / "bench" / f"clip-{run}").unlink()
        finally:
            await redis.stop()
    copy_rate, upload_rate = statistics.median(rates["copy"]), statistics.median(rates["upload"])
    return {
        "clip_mib": mib,
        "runs": runs,
        "copy_mib_s": copy_rate,
        "upload_mib_s": upload_rate,
        "ratio": upload_rate / copy_rate,
        "idle_rss_mb": idle,
        "peak_rss_mb": max(peaks),
        "rss_growth_mb": max(peaks) - idle,
    }


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.media", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--mib", type=int, default=1024, help="the clip's size (MiB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a 256 MiB clip, 1 run")
    args = parser.parse_args(argv)
    mib, runs = (256, 1) if args.quick else (args.mib, args.runs)
    try:
        result = asyncio.run(bench(mib, runs))
    except BenchError as exc:
        print(f"bench.media: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    print(
        f"upload {result['upload_mib_s']:,.0f} MiB/s vs file copy {result['copy_mib_s']:,.0f} "
        f"MiB/s: x{result['ratio']:.2f}; service RSS {result['idle_rss_mb']:.0f} MB idle, "
        f"{result['peak_rss_mb']:.0f} MB at most during a {mib} MiB clip"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
