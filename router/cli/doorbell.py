"""`switchyard doorbell device add|list|show|remove`: the doorbell registry, whose device is
whose and where its alerts go (kept in Redis, shared by every instance; the same as
`/doorbell/devices` over HTTP); and `switchyard doorbell timeline|readings <device>`, one
device's answers from the doorbell lakes (the same as `/doorbell/<device>/timeline`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from router.cli.analytics import ask
from router.cli.common import EXIT_CONFIG, add_config_option, with_config
from router.cli.devices import add_device_commands

if TYPE_CHECKING:
    import argparse

    from router.config import Config

WORKLOAD = "doorbell"
QUESTIONS = {
    "timeline": "a device's rings, detections, clips and outages, newest first",
    "readings": "a device's readings per minute: count, min, max, mean, last",
}


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "doorbell", help="the doorbell's device registry, timeline and readings"
    )
    nouns = parser.add_subparsers(dest="noun", metavar="NOUN", required=True)
    add_device_commands(nouns, "device", WORKLOAD, settings=True)
    _add_questions(nouns)


def _add_questions(nouns: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`doorbell timeline|readings <device>`: aliases of `analytics doorbell <question>`."""
    for question, what in QUESTIONS.items():
        asking = nouns.add_parser(question, help=what)
        asking.add_argument("device", nargs="?", help="the device id, as in its topics")
        asking.add_argument("--device", dest="device_option", help="the same, as an option")
        asking.add_argument("--since", help="from this ISO time, or this long ago: 1h, 2d")
        asking.add_argument("--until", help="to this ISO time, or this long ago (exclusive)")
        asking.add_argument("--limit", type=int, help="at most this many rows")
        asking.add_argument("--kind", help="one kind only: ring, motion, temperature, ...")
        asking.add_argument("--tz", default="UTC", help="show times in this zone")
        asking.add_argument("--format", choices=("table", "json", "csv"), default="table")
        add_config_option(asking)
        asking.set_defaults(handler=with_config(_ask))


def _ask(args: argparse.Namespace, config: Config) -> int:
    args.user = args.device or args.device_option
    if not args.user:
        print(f"switchyard: doorbell {args.noun} needs a device: DEVICE or --device DEVICE",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    return ask(config, WORKLOAD, args.noun, args)
