"""`switchyard analytics <workload> <question>`: a workload's answers over what it stored, as a
table, JSON or CSV; with no question, the questions it answers."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from router.cli.common import EXIT_CONFIG, add_config_option, with_config
from router.ops.analytics import Query, QueryError, load_analytics, render

if TYPE_CHECKING:
    import argparse

    from router.config import Config

HELP = "answers over what a workload stored: favourite artists, peak times, app versions, ..."


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("analytics", help=HELP, description=HELP)
    add_config_option(parser)
    parser.add_argument("workload", help="as named under `analytics:` in the config, e.g. music")
    parser.add_argument("question", nargs="?", help="leave out to list the questions")
    parser.add_argument("--user", help="one user's answer (default: everyone's)")
    parser.add_argument("--since", help="from this ISO date or time (inclusive)")
    parser.add_argument("--until", help="to this ISO date or time (exclusive)")
    parser.add_argument("--tz", default="UTC", help="read times in this zone (default: UTC)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.set_defaults(handler=with_config(analytics))


def analytics(args: argparse.Namespace, config: Config) -> int:
    settings = config.analytics.get(args.workload)
    if settings is None:
        known = ", ".join(sorted(config.analytics)) or "none"
        print(
            f"switchyard: no analytics for {args.workload!r} (configured: {known})", file=sys.stderr
        )
        return EXIT_CONFIG
    provider = load_analytics(settings)
    if args.question is None:
        for name, what in provider.questions().items():
            print(f"{name:<22} {what}")
        return 0
    try:
        query = Query.parse(args.user, args.since, args.until, args.tz)
        answer = provider.answer(args.question, query)
    except QueryError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # the store, not the question
        print(f"switchyard: {args.workload} could not answer: {exc}", file=sys.stderr)
        return 1
    print(render(answer, args.format))
    return 0
