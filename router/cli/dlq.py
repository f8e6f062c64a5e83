"""`switchyard dlq list|show|replay|purge`: the dead letters of a class, or of ingress
(`_unrouted`, `_rejected`), for people: listed with their reasons, shown whole, replayed into
their class (ingress rejects routed again), or purged."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from router.cli.common import (
    DEFAULT_CONFIG,
    EXIT_CONFIG,
    connect,
    run_against_redis,
    with_config,
)
from router.clock import SystemClock
from router.logs import printable
from router.routing.addressing import Addresser
from router.routing.rules import Router
from router.streams import keys
from router.streams.deadletters import LIST_LIMIT, DeadLetter, DeadLetters, Route
from router.streams.redis import RedisTransport

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from router.config import Config
    from router.streams.envelope import Envelope


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("dlq", help="list, show, replay or purge dead letters")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("list", "list a class's dead letters, oldest first"),
        ("show", "show dead letters in full"),
        ("replay", "put dead letters back into their class stream, attempts reset"),
        ("purge", "delete dead letters"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--config", "-c", default=DEFAULT_CONFIG)
        action.add_argument(
            "--class", dest="cls", required=True, help="an event class, or _unrouted / _rejected"
        )
        action.add_argument("--since", help="ISO time (UTC if no zone) or age such as 15m, 2h, 1d")
        action.add_argument("--id", dest="ids", action="append", help="entry or event id")
        action.add_argument("--limit", type=int, default=LIST_LIMIT)
        if name in ("replay", "purge"):
            action.add_argument("--all", action="store_true", help="every dead letter of the class")
        action.set_defaults(handler=with_config(dlq))


def dlq(args: argparse.Namespace, config: Config) -> int:
    if args.cls not in config.classes and args.cls not in (keys.UNROUTED, keys.REJECTED):
        print(f"switchyard: no class {args.cls!r} in {config.source}", file=sys.stderr)
        return EXIT_CONFIG
    if args.action in ("replay", "purge") and not (args.ids or args.since or args.all):
        print(f"switchyard: dlq {args.action} needs --id, --since or --all", file=sys.stderr)
        return EXIT_CONFIG
    try:
        since_ms = parse_since(args.since) if args.since else 0
    except ValueError as exc:
        print(f"switchyard: --since: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return run_against_redis(lambda: _dlq_async(config, args, since_ms))


async def _dlq_async(config: Config, args: argparse.Namespace, since_ms: int) -> int:
    redis = connect(config)
    try:
        transport = RedisTransport(redis, config.redis.group, "switchyard-cli")
        partitions = config.classes[args.cls].partitions if args.cls in config.classes else 1
        every = [DeadLetters(redis, transport, tag) for tag in keys.tags(args.cls, partitions)]
        if args.action in ("list", "show"):
            found = await _matching(every, args.ids, since_ms, limit=args.limit)
            if args.action == "list":
                _print_letters(found)
            else:
                for letter in found:
                    print(json.dumps(letter.summary(), indent=2, default=str))
        elif args.action == "replay":
            route = _router_of(config) if args.cls in keys.INGRESS_REJECTS else None
            replayed, skipped = 0, list[str]()
            for letters in every:
                async for page in letters.chosen(args.ids, since_ms):
                    moved, missed = await letters.replay(page, route)
                    replayed, skipped = replayed + moved, skipped + missed
            print(
                f"replayed {replayed} into {args.cls}"
                + (f"; skipped {len(skipped)}" if skipped else "")
            )
            for entry_id in skipped:
                print(f"  skipped {entry_id}: already replayed, no event in it, or still unrouted")
        else:
            purged = 0
            for letters in every:
                async for page in letters.chosen(args.ids, since_ms):
                    purged += await letters.purge(page)
            print(f"purged {purged} dead letters of {args.cls}")
    finally:
        await redis.aclose()
    return 0


def _router_of(config: Config) -> Route:
    """Routing as the service does it, for replaying ingress rejects into their classes."""
    addresser = Addresser(config, Router.from_config(config), SystemClock())

    def route(
        topic: str, payload: dict[str, Any], event_id: str | None
    ) -> tuple[Envelope, str] | None:
        envelope = addresser.for_topic(topic, payload, source="replay", event_id=event_id)
        return None if envelope is None else (envelope, addresser.partition(envelope))

    return route


async def _matching(
    every: Sequence[DeadLetters], ids: Sequence[str] | None, since_ms: int, limit: int
) -> list[DeadLetter]:
    """The dead letters of every partition (those named by `ids`, all when None), oldest first
    within each, up to `limit`."""
    found: list[DeadLetter] = []
    for letters in every:
        async for page in letters.chosen(ids, since_ms):
            found += page
            if len(found) >= limit:
                return found[:limit]
    return found


def _print_letters(letters: Sequence[DeadLetter]) -> None:
    print(f"{'entry':<16} {'failed (UTC)':<20} {'reason':<14} {'tries':>5}  {'event id':<34} error")
    for letter in letters:
        fields = letter.fields
        failed = _text(fields.get("failed_ts") or fields.get("ingest_ts") or "0")
        when = datetime.fromtimestamp(float(failed), UTC).strftime("%Y-%m-%d %H:%M:%S")
        error = _text(fields.get("error", "")).splitlines()[0][:60] if fields.get("error") else ""
        print(
            f"{letter.entry_id:<16} {when:<20} {_text(fields.get('reason', '')):<14} "
            f"{_text(fields.get('attempts', '-')):>5}  {_text(fields.get('id', '-')):<34} {error}"
        )
    print(f"{len(letters)} dead letter(s)")


def _text(value: Any) -> str:
    """A field as text for the terminal: dead letters hold what senders chose, so control
    characters (escape sequences) are shown escaped, never sent to the terminal."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return printable(text)


def parse_since(text: str) -> int:
    """Unix milliseconds from an ISO time (UTC when no zone is given) or an age like 15m."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    if text[:-1].isdigit() and text[-1] in units:
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1000)
    stamp = datetime.fromisoformat(text)
    return int((stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp() * 1000)
