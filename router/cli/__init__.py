"""The `switchyard` command: run the service, check a config, watch status, handle dead letters,
ask a workload's analytics, register doorbells, watch the clinic's board."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from router.cli import analytics, check, clinic, dlq, doorbell, publish, serve, status
from router.cli.common import EXIT_CONFIG

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_CONFIG
    code: int = handler(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (serve, check, status, dlq, publish, analytics, doorbell, clinic):
        command.add(commands)
    return parser


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
