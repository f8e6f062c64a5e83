"""`switchyard doorbell device add|list|show|remove`: the doorbell registry, whose device is
whose and where its alerts go (kept in Redis, shared by every instance; the same as
`/doorbell/devices` over HTTP); and `switchyard doorbell timeline|readings <device>`, one
device's answers from the doorbell lakes (the same as `/doorbell/<device>/timeline`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from router.cli.analytics import ask
from router.cli.common import (
    EXIT_CONFIG,
    add_config_option,
    connect,
    run_against_redis,
    with_config,
)
from router.notify.device import SETTINGS, Device, InvalidDevice
from router.notify.registry import Registry

if TYPE_CHECKING:
    import argparse

    from router.config import Config

WORKLOAD = "doorbell"
LIST_LIMIT = 100
QUESTIONS = {
    "timeline": "a device's rings, detections, clips and outages, newest first",
    "readings": "a device's readings per minute: count, min, max, mean, last",
}


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "doorbell", help="the doorbell's device registry, timeline and readings"
    )
    nouns = parser.add_subparsers(dest="noun", metavar="NOUN", required=True)
    device = nouns.add_parser("device", help="register, list, show or remove devices")
    actions = device.add_subparsers(dest="action", metavar="ACTION", required=True)

    adding = actions.add_parser("add", help="register a device, or replace its settings")
    adding.add_argument("device", help="the device id, as in its topics: doorbell/<device>/...")
    adding.add_argument("--owner", required=True, help="who is alerted")
    adding.add_argument("--webhook", help="an http(s) URL the alerts are POSTed to, signed")
    adding.add_argument(
        "--no-backchannel", action="store_true", help="no alerts on doorbell/<device>/alerts"
    )
    for name, what in SETTINGS.items():
        adding.add_argument(f"--{name.replace('_', '-')}", type=float, help=what)
    listing = actions.add_parser("list", help="the registered devices")
    listing.add_argument("--limit", type=int, default=LIST_LIMIT)
    for name in ("show", "remove"):
        one = actions.add_parser(name, help=f"{name} one device")
        one.add_argument("device")
    for action in actions.choices.values():
        add_config_option(action)
        action.set_defaults(handler=with_config(devices))
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


def devices(args: argparse.Namespace, config: Config) -> int:
    if args.action == "add":
        try:
            device = _device_of(args)
        except InvalidDevice as exc:
            print(f"switchyard: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return run_against_redis(lambda: _add(config, device))
    return run_against_redis(lambda: _read(config, args))


def _device_of(args: argparse.Namespace) -> Device:
    settings = {name: value for name in SETTINGS if (value := getattr(args, name)) is not None}
    return Device(
        id=args.device,
        owner=args.owner,
        webhook=args.webhook,
        backchannel=not args.no_backchannel,
        settings=settings,
    )


async def _add(config: Config, device: Device) -> int:
    redis = connect(config)
    try:
        new = await Registry(redis, WORKLOAD).add(device)
    finally:
        await redis.aclose()
    print(f"{'registered' if new else 'updated'} {device.id} (owner {device.owner})")
    return 0


async def _read(config: Config, args: argparse.Namespace) -> int:
    redis = connect(config)
    registry = Registry(redis, WORKLOAD)
    try:
        if args.action == "list":
            return await _list(registry, args.limit)
        if args.action == "show":
            device = await registry.get(args.device)
            if device is None:
                print(f"switchyard: no device {args.device!r}", file=sys.stderr)
                return 1
            print(device.to_json())
            return 0
        if not await registry.remove(args.device):
            print(f"switchyard: no device {args.device!r}", file=sys.stderr)
            return 1
        print(f"removed {args.device}")
        return 0
    finally:
        await redis.aclose()


async def _list(registry: Registry, limit: int) -> int:
    total = await registry.count()
    print(f"{'device':<24} {'owner':<16} {'mqtt':<5} {'webhook':<40} settings")
    shown = 0
    async for device in registry.devices():
        if shown == limit:
            break
        settings = " ".join(f"{k}={v:g}" for k, v in sorted(device.settings.items()))
        mqtt, webhook = ("yes" if device.backchannel else "no"), device.webhook or "-"
        print(f"{device.id:<24} {device.owner:<16} {mqtt:<5} {webhook:<40} {settings}")
        shown += 1
    print(f"{total} device(s)" + (f", {shown} shown" if shown < total else ""))
    return 0
