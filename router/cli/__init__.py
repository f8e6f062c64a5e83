"""The `switchyard` command: run the service, check a config, watch status, handle dead letters,
ask a workload's analytics, register doorbells, watch the clinic's board."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING

from router import redaction
from router.cli import analytics, check, clinic, dlq, doorbell, publish, reload, serve, status
from router.cli.common import EXIT_CONFIG

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The command; whatever it prints, no secret of its config shows."""
    with scrubbed_output():
        return _main(argv)


@contextlib.contextmanager
def scrubbed_output() -> Iterator[None]:
    """stdout and stderr scrubbed of the config's secrets, while a command runs."""
    if isinstance(sys.stdout, redaction.Scrubbed):
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = redaction.Scrubbed(out), redaction.Scrubbed(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: Sequence[str] | None) -> int:
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
    for command in (serve, check, reload, status, dlq, publish, analytics, doorbell, clinic):
        command.add(commands)
    return parser


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
