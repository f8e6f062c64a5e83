"""`switchyard <workload> device|pager add|list|show|remove`: a workload's device registry,
whose device is whose and where its alerts go (kept in Redis, shared by every instance; the
doorbell's is also `/doorbell/devices` over HTTP)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

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

LIST_LIMIT = 100


def add_device_commands(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser],
    noun: str,
    workload: str,
    *,
    settings: bool,
) -> None:
    """`<workload> <noun> add|list|show|remove`; `settings`: the add takes a device's
    settings (thresholds) as options."""
    device = nouns.add_parser(noun, help=f"register, list, show or remove {noun}s")
    actions = device.add_subparsers(dest="action", metavar="ACTION", required=True)
    adding = actions.add_parser("add", help=f"register a {noun}, or replace its settings")
    adding.add_argument(
        "device", help=f"the {noun}'s id; its MQTT alerts go to {workload}/<id>/alerts"
    )
    adding.add_argument("--owner", required=True, help="who is alerted")
    adding.add_argument("--webhook", help="an http(s) URL the alerts are POSTed to, signed")
    adding.add_argument(
        "--no-backchannel", action="store_true", help=f"no alerts on {workload}/<id>/alerts"
    )
    for name, what in SETTINGS.items() if settings else ():
        adding.add_argument(f"--{name.replace('_', '-')}", type=float, help=what)
    listing = actions.add_parser("list", help=f"the registered {noun}s")
    listing.add_argument("--limit", type=int, default=LIST_LIMIT)
    for name in ("show", "remove"):
        one = actions.add_parser(name, help=f"{name} one {noun}")
        one.add_argument("device")
    for action in actions.choices.values():
        add_config_option(action)
        action.set_defaults(handler=with_config(devices), workload=workload)


def devices(args: argparse.Namespace, config: Config) -> int:
    if args.action == "add":
        try:
            device = _device_of(args)
        except InvalidDevice as exc:
            print(f"switchyard: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return run_against_redis(lambda: _add(config, args.workload, device))
    return run_against_redis(lambda: _read(config, args))


def _device_of(args: argparse.Namespace) -> Device:
    settings = {
        name: value for name in SETTINGS if (value := getattr(args, name, None)) is not None
    }
    return Device(
        id=args.device,
        owner=args.owner,
        webhook=args.webhook,
        backchannel=not args.no_backchannel,
        settings=settings,
    )


async def _add(config: Config, workload: str, device: Device) -> int:
    redis = connect(config)
    try:
        new = await Registry(redis, workload).add(device)
    finally:
        await redis.aclose()
    print(f"{'registered' if new else 'updated'} {device.id} (owner {device.owner})")
    return 0


async def _read(config: Config, args: argparse.Namespace) -> int:
    redis = connect(config)
    registry = Registry(redis, args.workload)
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
