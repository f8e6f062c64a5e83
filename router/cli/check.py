"""`switchyard check`: validate a config file and summarise it on one screen."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from router.cli.common import EXIT_CONFIG, add_config_option, connect, with_config
from router.errors import ConfigError, ConfigIssue, EmbeddedServerError
from router.redaction import redact_url
from router.streams.layout import partition_problems
from router.streams.redis import RedisTransport
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    import argparse

    from router.config import Config

HELP = "validate a config file and summarise it"


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("check", help=HELP, description=HELP)
    add_config_option(parser)
    parser.set_defaults(handler=with_config(check))


def check(args: argparse.Namespace, config: Config) -> int:
    problems, note = asyncio.run(_against_redis(config))
    if problems:
        issues = [
            ConfigIssue(
                f"classes.{name}.partitions", config.line_of(("classes", name, "partitions")), why
            )
            for name, why in problems.items()
        ]
        print(ConfigError(config.source, issues), file=sys.stderr)
        return EXIT_CONFIG
    print(summary(config))
    print(note)
    return 0


async def _against_redis(config: Config) -> tuple[dict[str, str], str]:
    """What the config would change in Redis that it must not (the partition counts of
    classes holding events), when Redis can be reached; and a line saying which."""
    try:
        redis = connect(config)
    except EmbeddedServerError:
        return {}, "partition counts not checked against Redis: the embedded Redis is not running"
    try:
        transport = RedisTransport(redis, config.redis.group, "switchyard-check")
        return await partition_problems(transport, config), "partition counts: as in Redis"
    except UNAVAILABLE as exc:
        return {}, f"partition counts not checked against Redis: unreachable ({exc})"
    finally:
        await redis.aclose()


def summary(config: Config) -> str:
    """A one-screen overview of a valid config."""
    lines = [
        f"{config.source}: ok",
        f"redis: {redact_url(config.redis.url)}   http: {config.http.host}:{config.http.port}"
        + ("" if config.http.enabled else " (off)")
        + f"   mqtt: {redact_url(config.mqtt.url)}"
        + (f" ({len(config.mqtt.subscriptions)} subscriptions)" if config.mqtt.enabled else ""),
        _lane_line(config),
        f"routes: {len(config.routes)}",
        f"classes ({len(config.classes)}):",
        f"  {'class':<28} {'lane':<8} {'mode':<7} {'conc':>5} {'parts':>5}  {'sla':<14} actor",
    ]
    for name, cls in config.classes_by_lane():
        sla = f"{cls.sla.target_ms:g}ms@{cls.sla.objective:g}" if cls.sla else "-"
        lines.append(
            f"  {name:<28} {cls.lane:<8} {cls.mode:<7} {cls.concurrency:>5} {cls.partitions:>5}  "
            f"{sla:<14} {cls.actor}"
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
