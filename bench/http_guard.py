"""The listener under hostile clients: how long `/healthz` takes while others abuse the port.

    .venv/bin/python -m bench.http_guard [--probes 200] [--quick]

One command starts a private redis-server and `switchyard run` (loopback, no tokens, the
default limits), then times `--probes` sequential `GET /healthz`, p50 and p99:

  quiet      nobody else
  scrapers   50 clients pipelining `GET /metrics` they never read
  slowloris  300 connections trickling header lines, never finishing a request
  idle       500 connections that send nothing
Each case is probed twice: as the attack starts, and `SETTLE_S` later, once it is under way.
Each hostile case is reported as a ratio to the quiet one, in the same run, with how many of
the hostile connections the service had closed by the end (its idle timeout, its per-client
cap of 64 connections). The hostile clients connect from 127.0.0.2, the probes from
127.0.0.1: two clients, as an attacker and a health checker would be.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import progress
from router.embedded.process import free_port
from router.embedded.redis import EmbeddedRedis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

HOST = "127.0.0.1"
SETTLE_S = 2.0  # the second round of probes: this long after the attack began
ATTACKER = ("127.0.0.2", 0)  # another loopback address: the probes are another client
CONFIG = """
redis: {{url: "{redis}"}}
http: {{port: {port}}}
service: {{log_level: warning}}
lanes: [{{name: high}}]
classes: {{things: {{lane: high, actor: "actors.builtin:Log"}}}}
"""
Held = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
Hostile = Callable[[int, Held], Awaitable[None]]


async def probe(port: int, count: int) -> list[float]:
    """`count` sequential GET /healthz on one connection each: seconds each took."""
    took = []
    for _ in range(count):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await reader.read()
        writer.close()
        took.append(time.perf_counter() - started)
    return took


async def scrapers(port: int, held: Held) -> None:
    for _ in range(50):
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=ATTACKER)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200)  # never read
        held.append((reader, writer))


async def slowloris(port: int, held: Held) -> None:
    for _ in range(300):
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=ATTACKER)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            held.append((reader, writer))


async def idle(port: int, held: Held) -> None:
    for _ in range(500):
        with contextlib.suppress(OSError):
            held.append(await asyncio.open_connection(HOST, port, local_addr=ATTACKER))


async def trickle(held: Held) -> None:
    """Keep the slowloris connections sending a header line now and then."""
    while True:
        for _, writer in held:
            if not writer.is_closing():
                writer.write(b"X-Slow: 1\r\n")
        await asyncio.sleep(1.0)


def figures(took: Sequence[float]) -> dict[str, float]:
    ordered = sorted(took)
    return {"p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000}  # fmt: skip


@contextlib.asynccontextmanager
async def service(temp: Path) -> AsyncIterator[int]:
    redis = EmbeddedRedis(temp / "redis", appendonly=False)
    await redis.start()
    port = free_port()
    (temp / "switchyard.yaml").write_text(CONFIG.format(redis=redis.url, port=port))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "run", "--config", str(temp / "switchyard.yaml"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                await probe(port, 1)
                break
            await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()
        await redis.stop()


async def measure(probes: int) -> dict[str, Any]:
    cases: dict[str, Hostile | None] = {
        "quiet": None, "scrapers": scrapers, "slowloris": slowloris, "idle": idle,
    }  # fmt: skip
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="switchyard-http-") as temp:
        async with service(Path(temp)) as port:
            for name, attack in cases.items():
                progress(f"{name}: {probes} probes of /healthz")
                held: Held = []
                keep = None
                if attack is not None:
                    await attack(port, held)
                    if name == "slowloris":
                        keep = asyncio.create_task(trickle(held))
                took = await probe(port, probes)  # while the attack starts
                await asyncio.sleep(SETTLE_S)
                steady = await probe(port, probes)  # once it is under way
                if keep is not None:
                    keep.cancel()
                closed = sum(1 for reader, writer in held if reader.at_eof() or writer.is_closing())
                results[name] = figures(took) | {
                    "steady": figures(steady), "connections": len(held), "closed": closed,
                }  # fmt: skip
                for _, writer in held:
                    writer.close()
    quiet = results["quiet"]
    for name in ("scrapers", "slowloris", "idle"):
        results[name]["p99_vs_quiet"] = results[name]["p99_ms"] / quiet["p99_ms"]
        steady = results[name]["steady"]
        steady["p99_vs_quiet"] = steady["p99_ms"] / quiet["steady"]["p99_ms"]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_guard", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="50 probes")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(50 if args.quick else args.probes))
    print(json.dumps(results, indent=2))
    quiet = results["quiet"]
    print(f"/healthz quiet: p50 {quiet['p50_ms']:.2f} ms, p99 {quiet['p99_ms']:.2f} ms")
    for name in ("scrapers", "slowloris", "idle"):
        r = results[name]
        print(
            f"  with {name}: p99 {r['p99_ms']:.2f} ms (x{r['p99_vs_quiet']:.2f} quiet) as it "
            f"starts, {r['steady']['p99_ms']:.2f} ms (x{r['steady']['p99_vs_quiet']:.2f}) once "
            f"under way; {r['closed']} of {r['connections']} hostile connections closed by then"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
