"""`switchyard status [--watch]`: a table per class, read from Redis and the running
instances' reports, from any machine that reaches Redis."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from router.cli.common import add_config_option, connect, run_against_redis, with_config
from router.ops.status import collect

if TYPE_CHECKING:
    import argparse

    from router.config import Config

HELP = "per class: lane, mode, in-flight, backlog, pending, age, rate, latency, SLA"
CLEAR_SCREEN = "\x1b[2J\x1b[H"


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("status", help=HELP, description=HELP)
    add_config_option(parser)
    parser.add_argument(
        "--watch", nargs="?", type=float, const=2.0, metavar="SECONDS", help="refresh until Ctrl-C"
    )
    parser.set_defaults(handler=with_config(status))


def status(args: argparse.Namespace, config: Config) -> int:
    return run_against_redis(lambda: _show(config, args.watch), interrupted=0)


async def _show(config: Config, watch: float | None) -> int:
    redis = connect(config)
    try:
        while True:
            table = await collect(redis, config)
            if watch is None:
                print(table)
                return 0
            print(CLEAR_SCREEN + time.strftime("%H:%M:%S ") + table, flush=True)
            await asyncio.sleep(watch)
    finally:
        await redis.aclose()
