"""`switchyard clinic board [--watch] | patient <id> | attention | visits | pager ...`: the
clinic lead's board in the terminal, one patient's journey, who needs attention, the archive
of closed visits, and the pager reactions are sent to. The same answers as `/clinic` and
`/clinic/patients/<id>` over HTTP (the clinic's analytics questions)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from router.cli.analytics import ask, live, provider_of
from router.cli.common import EXIT_CONFIG, add_config_option, run_against_redis, with_config
from router.cli.devices import add_device_commands
from router.ops.analytics import Query, QueryError, answer_of, render

if TYPE_CHECKING:
    import argparse

    from router.config import Config
    from router.ops.analytics import Analytics

WORKLOAD = "clinic"
BOARD = ("summary", "board", "observation", "attention")
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        WORKLOAD, help="the clinic's board, a patient's journey, who needs attention"
    )
    nouns = parser.add_subparsers(dest="noun", metavar="NOUN", required=True)
    board = nouns.add_parser("board", help="the stations, the day, observation and attention")
    board.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    board.add_argument("--every", type=float, default=2.0, help="seconds between redraws")
    board.set_defaults(handler=with_config(_board))
    patient = nouns.add_parser("patient", help="one patient's visits, every step timed")
    patient.add_argument("patient", help="the patient's id")
    attention = nouns.add_parser("attention", help="dead letters of the stations: who, why, since")
    visits = nouns.add_parser("visits", help="closed visits from the archive, newest first")
    visits.add_argument("--since", help="from this ISO time, or this long ago: 8h, 2d")
    visits.add_argument("--until", help="to this ISO time, or this long ago (exclusive)")
    visits.add_argument("--limit", type=int, help="at most this many rows")
    for asking in (patient, attention, visits):
        asking.add_argument("--format", choices=("table", "json", "csv"), default="table")
        asking.set_defaults(handler=with_config(_ask))
    for command in (board, patient, attention, visits):
        add_config_option(command)
    add_device_commands(nouns, "pager", WORKLOAD, settings=False)


def _ask(args: argparse.Namespace, config: Config) -> int:
    args.user = getattr(args, "patient", None)
    return ask(config, WORKLOAD, args.noun, args)


def _board(args: argparse.Namespace, config: Config) -> int:
    provider = provider_of(config, WORKLOAD)
    if provider is None:
        return EXIT_CONFIG
    if args.every <= 0:
        print("switchyard: --every must be more than 0 seconds", file=sys.stderr)
        return EXIT_CONFIG
    return run_against_redis(lambda: _show(config, provider, args), interrupted=0)


async def _show(config: Config, provider: Analytics, args: argparse.Namespace) -> int:
    async with live(config, WORKLOAD, provider):
        while True:
            try:
                answers = [await answer_of(provider, q, Query()) for q in BOARD]
            except QueryError as exc:
                print(f"switchyard: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            drawn = "\n\n".join(render(answer, "table") for answer in answers)
            stamp = time.strftime("%H:%M:%S")
            if not args.watch:
                print(drawn)
                return 0
            print(f"{CLEAR}clinic board at {stamp} (Ctrl-C to stop)\n\n{drawn}", flush=True)
            await asyncio.sleep(args.every)
