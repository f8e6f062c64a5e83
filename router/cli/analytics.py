"""`switchyard analytics <workload> <question>`: a workload's answers over what it stored, as a
table, JSON or CSV; with no question, the questions it answers."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

from router.cli.common import (
    EXIT_CONFIG,
    add_config_option,
    connect,
    run_against_redis,
    with_config,
)
from router.ops.analytics import Query, QueryError, answer_of, load_analytics, render
from router.ops.lookups import RedisLookups
from router.streams.redis import RedisTransport
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator

    from router.config import Config
    from router.ops.analytics import Analytics, Format

HELP = "answers over what a workload stored: favourite artists, peak times, app versions, ..."


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("analytics", help=HELP, description=HELP)
    add_config_option(parser)
    parser.add_argument("workload", help="as named under `analytics:` in the config, e.g. music")
    parser.add_argument("question", nargs="?", help="leave out to list the questions")
    parser.add_argument("--user", help="whose answer: a user, or a device (default: everyone's)")
    parser.add_argument("--since", help="from this ISO date or time (inclusive)")
    parser.add_argument("--until", help="to this ISO date or time (exclusive)")
    parser.add_argument("--tz", default="UTC", help="read times in this zone (default: UTC)")
    parser.add_argument("--limit", type=int, help="at most this many rows (where it applies)")
    parser.add_argument("--kind", help="one kind of thing only (where it applies)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.set_defaults(handler=with_config(analytics))


def analytics(args: argparse.Namespace, config: Config) -> int:
    if args.question is None:
        provider = provider_of(config, args.workload)
        if provider is None:
            return EXIT_CONFIG
        for name, what in provider.questions().items():
            print(f"{name:<22} {what}")
        return 0
    return ask(config, args.workload, args.question, args)


def ask(config: Config, workload: str, question: str, args: argparse.Namespace) -> int:
    """Print one answer, the query read from `args` (user, since, until, tz, limit, kind,
    format; absent ones left out): for this command and its aliases (`doorbell timeline`)."""
    provider = provider_of(config, workload)
    if provider is None:
        return EXIT_CONFIG
    given = {name: getattr(args, name, None) for name in ("user", "since", "until", "tz")}
    try:
        query = Query.parse(
            **given, limit=getattr(args, "limit", None), kind=getattr(args, "kind", None)
        )
    except QueryError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    form: Format = getattr(args, "format", None) or "table"
    asked = (workload, question, query)
    return run_against_redis(lambda: _print_answer(config, provider, asked, form))


async def _print_answer(
    config: Config, provider: Analytics, asked: tuple[str, str, Query], form: Format
) -> int:
    """Print one answer to `asked` (workload, question, query); a provider of live answers
    reads Redis for it."""
    workload, question, query = asked
    async with live(config, workload, provider):
        try:
            answer = await answer_of(provider, question, query)
        except QueryError as exc:
            print(f"switchyard: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except UNAVAILABLE:
            raise
        except Exception as exc:  # the store, not the question
            print(f"switchyard: {workload} could not answer: {exc}", file=sys.stderr)
            return 1
    print(render(answer, form))
    return 0


@contextlib.asynccontextmanager
async def live(config: Config, workload: str, provider: Analytics) -> AsyncIterator[None]:
    """Bind a provider that reads live state to the configured Redis, for as long as it asks."""
    bind = getattr(provider, "bind", None)
    if bind is None:
        yield
        return
    redis = connect(config)
    try:
        transport = RedisTransport(redis, config.redis.group, "switchyard-cli")
        bind(RedisLookups(redis, transport, config, workload))
        yield
    finally:
        await redis.aclose()


def provider_of(config: Config, workload: str) -> Analytics | None:
    settings = config.analytics.get(workload)
    if settings is None:
        known = ", ".join(sorted(config.analytics)) or "none"
        print(f"switchyard: no analytics for {workload!r} (configured: {known})", file=sys.stderr)
        return None
    return load_analytics(settings)
