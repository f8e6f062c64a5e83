"""`switchyard publish`: send one event (or a JSON array) to a running service, over HTTP or
through its MQTT broker, as a device or app would."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from router import redaction
from router.cli.common import EXIT_CONFIG
from router.ingress.mqtt import MqttError, MqttPublisher
from router.redaction import redact_url

if TYPE_CHECKING:
    import argparse

HELP = "send one event to a running service over HTTP or MQTT"


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("publish", help=HELP, description=HELP)
    parser.add_argument("topic", help="e.g. doorbell/front-door/button_press")
    parser.add_argument("payload", help='a JSON object or array, e.g. \'{"priority": "high"}\'')
    parser.add_argument(
        "--url",
        default=os.environ.get("SWITCHYARD_URL", "http://127.0.0.1:8080"),
        help="http://host:port of the service, or mqtt://host:port of its broker "
        "(default: %(default)s)",
    )
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="MQTT QoS")
    parser.add_argument(
        "--ca-file", help="for mqtts://: the CA that signed the broker's certificate"
    )
    parser.set_defaults(handler=publish)


def publish(args: argparse.Namespace) -> int:
    redaction.remember_url(args.url)  # a password in --url is never printed back
    try:
        json.loads(args.payload)
    except ValueError as exc:
        print(f"switchyard: payload is not JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.url.startswith(("mqtt://", "mqtts://")):
        return _over_mqtt(args)
    return _over_http(args)


def _over_mqtt(args: argparse.Namespace) -> int:
    async def send() -> None:
        async with MqttPublisher(args.url, ca_file=args.ca_file) as publisher:
            await publisher.publish(args.topic, args.payload.encode(), qos=args.qos)

    try:
        asyncio.run(send())
    except MqttError as exc:
        print(f"switchyard: cannot publish to {redact_url(args.url)}: {exc}", file=sys.stderr)
        return 1
    print(f"published to {args.topic} at QoS {args.qos}")
    return 0


def _over_http(args: argparse.Namespace) -> int:
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
        print(f"switchyard: cannot reach {redact_url(args.url)}: {exc.reason}", file=sys.stderr)
    return 1
