"""The `switchyard` command: run, check, demo and publish."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.asyncio import Redis

from actors.pool import load_actor
from router import keys
from router.app import Service, resolve_redis_url
from router.clock import SystemClock
from router.config import Config, load_config
from router.deadletters import LIST_LIMIT, DeadLetter, DeadLetters, Route
from router.demo import DemoOptions, run_demo
from router.errors import ActorLoadError, ConfigError, ConfigIssue, EmbeddedServerError
from router.ingest import Ingest
from router.logs import configure_logging, printable
from router.metrics import Metrics
from router.mqtt import MqttError, MqttPublisher
from router.routing import Router
from router.status import collect as collect_status
from router.transport import UNAVAILABLE, Transport
from router.workers import Assignment, claim_stdout, read_config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from router.envelope import Envelope

DEFAULT_CONFIG = os.environ.get("SWITCHYARD_CONFIG", "config.yaml")
EXIT_CONFIG = 2

log = structlog.get_logger("switchyard.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    handlers = {
        "run": _run,
        "check": _check,
        "demo": _demo,
        "publish": _publish,
        "dlq": _dlq,
        "status": _status,
        "worker": _worker,
    }
    handler = handlers[args.command]
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (
        ("run", "run the service until SIGTERM or Ctrl-C"),
        ("check", "validate a config file and summarise it"),
        ("demo", "run the service with a simulator of the three workloads and a live summary"),
        ("status", "per class: lane, mode, in-flight, backlog, pending, age, rate, latency, SLA"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--config", "-c", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
        )
    demo = commands.choices["demo"]
    demo.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="simulated events per second (default: %(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--every", type=float, default=5.0, help="seconds between summaries (default: %(default)s)"
    )
    commands.choices["status"].add_argument(
        "--watch", nargs="?", type=float, const=2.0, metavar="SECONDS", help="refresh until Ctrl-C"
    )
    _dlq_parser(commands)
    # Internal (no help, so not listed): a lane worker, started by the service itself.
    worker = commands.add_parser("worker", description="a lane worker; config JSON on stdin")
    worker.add_argument("--lane", required=True)
    worker.add_argument("--index", type=int, default=0)
    worker.add_argument("--port", type=int, required=True, help="where it answers its parent")
    publish = commands.add_parser(
        "publish", help="send one event to a running service over HTTP or MQTT"
    )
    publish.add_argument("topic", help="e.g. doorbell/front-door/button_press")
    publish.add_argument("payload", help='a JSON object or array, e.g. \'{"priority": "high"}\'')
    publish.add_argument(
        "--url",
        default=os.environ.get("SWITCHYARD_URL", "http://127.0.0.1:8080"),
        help="http://host:port of the service, or mqtt://host:port of its broker "
        "(default: %(default)s)",
    )
    publish.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="MQTT QoS")
    return parser


def _dlq_parser(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="list, show, replay or purge dead letters")
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
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
        action.add_argument(
            "--id", dest="ids", action="append", default=[], help="entry or event id"
        )
        action.add_argument("--limit", type=int, default=LIST_LIMIT)
        if name in ("replay", "purge"):
            action.add_argument("--all", action="store_true", help="every dead letter of the class")


def _load(path: str) -> Config | None:
    try:
        config = load_config(path)
        _check_actors(config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    return config


def _check_actors(config: Config) -> None:
    """Import every actor and build it with its options, so a typo fails here, not at 3 a.m."""
    issues = []
    for name, cls in config.classes.items():
        try:
            load_actor(cls.actor, cls.options)
        except ActorLoadError as exc:
            path = ("classes", name, "actor")
            issues.append(ConfigIssue(f"classes.{name}.actor", config.line_of(path), exc.reason))
    if issues:
        raise ConfigError(config.source, issues)


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    print(summary(config))
    return 0


def summary(config: Config) -> str:
    """A one-screen overview of a valid config."""
    lines = [
        f"{config.source}: ok",
        f"redis: {config.redis.url}   http: {config.http.host}:{config.http.port}"
        + ("" if config.http.enabled else " (off)")
        + f"   mqtt: {config.mqtt.url}"
        + (f" ({len(config.mqtt.subscriptions)} subscriptions)" if config.mqtt.enabled else ""),
        _lane_line(config),
        f"routes: {len(config.routes)}",
        f"classes ({len(config.classes)}):",
        f"  {'class':<28} {'lane':<8} {'mode':<7} {'conc':>5}  {'sla':<14} actor",
    ]
    for name, cls in config.classes_by_lane():
        sla = f"{cls.sla.target_ms:g}ms@{cls.sla.objective:g}" if cls.sla else "-"
        lines.append(
            f"  {name:<28} {cls.lane:<8} {cls.mode:<7} {cls.concurrency:>5}  {sla:<14} {cls.actor}"
        )
    return "\n".join(lines)


def _lane_line(config: Config) -> str:
    """The lanes, highest first, each with its worker processes when it has its own."""
    lanes = [
        f"{lane.name} ({lane.workers} worker{'s' if lane.workers > 1 else ''})"
        if lane.workers
        else lane.name
        for lane in config.lanes
    ]
    return f"lanes ({len(config.lanes)}, highest first): {', '.join(lanes)}"


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    _configure_logging(config)
    return _serve(config, demo=None)


def _demo(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    _configure_logging(config, default_level="warning")
    code = _serve(
        config, demo=DemoOptions(rate=args.rate, duration=args.duration, every=args.every)
    )
    outcome = "stopped cleanly" if code == 0 else f"stopped with exit code {code}"
    print(f"switchyard demo: {outcome}", flush=True)
    return code


def _configure_logging(config: Config, default_level: str | None = None) -> None:
    configure_logging(config.service.log_format, default_level or config.service.log_level)


def _worker(args: argparse.Namespace) -> int:
    """A lane worker: the service's own config from stdin, only its lane's pools, no ingress."""
    announce = claim_stdout()
    try:
        config = read_config(sys.stdin.buffer.read())
    except ValidationError as exc:
        print(f"switchyard worker: the config on stdin is not valid: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.lane not in config.isolated_lanes():
        print(f"switchyard worker: lane {args.lane!r} has no workers", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(config)
    assignment = Assignment(args.lane, args.index, args.port)
    structlog.contextvars.bind_contextvars(worker=assignment.name)
    return _serve(config, demo=None, assignment=assignment, ready=announce)


def _serve(
    config: Config,
    demo: DemoOptions | None,
    assignment: Assignment | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    try:
        return asyncio.run(_serve_async(config, demo, assignment, ready))
    except EmbeddedServerError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
    except UNAVAILABLE as exc:
        print(f"switchyard: cannot reach Redis at {config.redis.url}: {exc}", file=sys.stderr)
    return 1


async def _serve_async(
    config: Config,
    demo: DemoOptions | None,
    assignment: Assignment | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1 and assignment is not None:
            # A worker's parent stops it (SIGKILL past the deadline); a dying parent's threads
            # can each deliver its parent-death SIGTERM, which must not cut the drain short.
            return
        if signals > 1:
            log.warning("second signal, exiting at once; unfinished entries stay pending")
            os._exit(130)
        log.info("signal received, draining")
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    async with Service(config, assignment=assignment) as service:
        if ready is not None:
            ready()
        if demo is not None:
            await run_demo(service, demo, stop)
        else:
            await stop.wait()
    return service.exit_code


def _publish(args: argparse.Namespace) -> int:
    try:
        json.loads(args.payload)
    except ValueError as exc:
        print(f"switchyard: payload is not JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.url.startswith(("mqtt://", "mqtts://")):
        return _publish_mqtt(args)
    return _publish_http(args)


def _publish_mqtt(args: argparse.Namespace) -> int:
    async def send() -> None:
        async with MqttPublisher(args.url) as publisher:
            await publisher.publish(args.topic, args.payload.encode(), qos=args.qos)

    try:
        asyncio.run(send())
    except MqttError as exc:
        print(f"switchyard: cannot publish to {args.url}: {exc}", file=sys.stderr)
        return 1
    print(f"published to {args.topic} at QoS {args.qos}")
    return 0


def _publish_http(args: argparse.Namespace) -> int:
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/events/{args.topic}",
        data=args.payload.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(json.dumps(json.loads(response.read())))  # spaced, for people to read
            return 0
    except urllib.error.HTTPError as exc:
        print(f"switchyard: {exc.code} {exc.read().decode()}", file=sys.stderr)
    except urllib.error.URLError as exc:
        print(f"switchyard: cannot reach {args.url}: {exc.reason}", file=sys.stderr)
    return 1


def _status(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        return asyncio.run(_status_async(config, args.watch))
    except EmbeddedServerError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
    except UNAVAILABLE as exc:
        print(f"switchyard: cannot reach Redis: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 0
    return 1


async def _status_async(config: Config, watch: float | None) -> int:
    redis = Redis.from_url(resolve_redis_url(config), socket_connect_timeout=2)
    try:
        while True:
            table = await collect_status(redis, config)
            if watch is None:
                print(table)
                return 0
            print("\x1b[2J\x1b[H" + time.strftime("%H:%M:%S ") + table, flush=True)
            await asyncio.sleep(watch)
    finally:
        await redis.aclose()


def _dlq(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
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
    try:
        return asyncio.run(_dlq_async(config, args, since_ms))
    except EmbeddedServerError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
    except UNAVAILABLE as exc:
        print(f"switchyard: cannot reach Redis: {exc}", file=sys.stderr)
    return 1


async def _dlq_async(config: Config, args: argparse.Namespace, since_ms: int) -> int:
    redis = Redis.from_url(resolve_redis_url(config), socket_connect_timeout=2)
    try:
        transport = Transport(redis, config.redis.group, "switchyard-cli")
        letters = DeadLetters(redis, transport, args.cls)
        if args.action in ("list", "show"):
            found = await _matching(letters, args.ids, since_ms, limit=args.limit)
            if args.action == "list":
                _print_letters(found)
            else:
                for letter in found:
                    print(json.dumps(letter.summary(), indent=2, default=str))
        elif args.action == "replay":
            replayed, skipped = 0, list[str]()
            route = _router_of(config, transport) if args.cls in keys.INGRESS_REJECTS else None
            async for page in _pages(letters, args.ids, since_ms):
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
            async for page in _pages(letters, args.ids, since_ms):
                purged += await letters.purge(page)
            print(f"purged {purged} dead letters of {args.cls}")
    finally:
        await redis.aclose()
    return 0


def _router_of(config: Config, transport: Transport) -> Route:
    """Routing as the service does it, for replaying ingress rejects into their classes."""
    ingest = Ingest(
        config, Router.from_config(config), transport, Metrics(CollectorRegistry()), SystemClock()
    )

    def route(topic: str, payload: dict[str, Any], event_id: str | None) -> Envelope | None:
        return ingest.for_topic(topic, payload, source="replay", event_id=event_id)

    return route


async def _pages(
    letters: DeadLetters, ids: Sequence[str], since_ms: int
) -> AsyncIterator[list[DeadLetter]]:
    """Every dead letter from `since_ms` on, or only those named by entry or event id."""
    wanted = set(ids)
    async for page in letters.pages(since_ms):
        chosen = [
            d
            for d in page
            if not wanted or d.entry_id in wanted or _text(d.fields.get("id")) in wanted
        ]
        if chosen:
            yield chosen


async def _matching(
    letters: DeadLetters, ids: Sequence[str], since_ms: int, limit: int
) -> list[DeadLetter]:
    found: list[DeadLetter] = []
    async for page in _pages(letters, ids, since_ms):
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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
