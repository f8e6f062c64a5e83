"""One hot-path command through redis-py's client against the same command on a line.

    .venv/bin/python -m bench.redis_line [--commands 10000] [--rounds 3] [--loop auto] [--quick]

One command starts a private redis-server and sends `--commands` commands one at a time,
each awaited before the next (as a pool's reader, its settler and the ingest writer do),
three ways, taking turns `--rounds` times: through the service's client (a pooled
connection, the socket timeout the service sets, one retry), on a `router.streams.line.Line`,
and straight on one of redis-py's connections, with no lock and no timeout: what the line
was before it read its socket itself. The
command is an XACK of an id that is not pending: a full round trip that changes nothing.
It prints this process's CPU per command (user + system) and the wall time, medians, and
each as a ratio to the client.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bench.harness import progress
from router import loops
from router.embedded.redis import EmbeddedRedis
from router.streams.line import Line

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

COMMAND = ("XACK", "bench:line", "group", "1-1")
WARM_UP = 500


async def timed(send: Callable[[], Awaitable[Any]], commands: int) -> tuple[float, float]:
    """(CPU us, wall us) per command over `commands` sent one after the other."""
    for _ in range(WARM_UP):
        await send()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(commands):
        await send()
    per = 1e6 / commands
    return (time.process_time() - cpu) * per, (time.perf_counter() - wall) * per


async def measure(commands: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchyard-line-") as temp:
        server = EmbeddedRedis(Path(temp) / "redis", appendonly=False)
        await server.start()
        pool = BlockingConnectionPool.from_url(
            server.url,
            max_connections=64,
            timeout=10,
            socket_keepalive=True,
            socket_connect_timeout=2,
            socket_timeout=7.0,
            retry=Retry(NoBackoff(), 1),
        )  # fmt: skip  (as router.service.servers connects, block_ms 2000)
        client = Redis(connection_pool=pool)
        unlimited = {**pool.connection_kwargs, "socket_timeout": None}  # as Lines make them
        line = Line(pool.connection_class(**unlimited), timeout_s=5.0)
        bare = pool.connection_class(**unlimited)

        async def on_connection() -> Any:
            await bare.send_packed_command(bare.pack_command(*COMMAND), check_health=False)
            return await bare.read_response()

        ways = {
            "client": lambda: client.xack(*COMMAND[1:]),
            "line": lambda: line.call(*COMMAND),
            "redis-py's connection, bare": on_connection,
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        try:
            for number in range(1, rounds + 1):
                for name, send in ways.items():
                    figures[name].append(await timed(send, commands))
                    progress(f"round {number}/{rounds} {name}: {figures[name][-1][0]:.1f} us CPU")
        finally:
            await line.close()
            await bare.disconnect()
            await client.aclose()
            await server.stop()
    return {name: {"cpu_us": statistics.median(c for c, _ in runs),
                   "wall_us": statistics.median(w for _, w in runs)}
            for name, runs in figures.items()}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.redis_line", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--quick", action="store_true", help="2,000 commands, 1 round")
    args = parser.parse_args(argv)
    commands, rounds = (2_000, 1) if args.quick else (args.commands, args.rounds)
    result = loops.run(measure(commands, rounds), loops.factory(args.loop))
    print(json.dumps(result, indent=2))
    base = result["client"]
    print(f"\n{commands:,} XACKs one at a time, median of {rounds} round(s), "
          f"loop {loops.chosen(args.loop)}")  # fmt: skip
    print(f"{'way':<30}{'cpu us/command':>16}{'vs client':>11}{'wall us':>10}{'vs client':>11}")
    for name, row in result.items():
        print(f"{name:<30}{row['cpu_us']:>16.1f}{row['cpu_us'] / base['cpu_us']:>10.2f}x"
              f"{row['wall_us']:>10.1f}{row['wall_us'] / base['wall_us']:>10.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
