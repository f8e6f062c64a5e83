"""`switchyard reload`: make a running instance read its config file again, and say what it
did: applied (what changed, the config's new hash and generation) or refused (each reason,
with its line), the running config kept. The same as SIGHUP or `POST /admin/reload`."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from router.cli.common import EXIT_CONFIG, add_config_option, load
from router.config.models import LOOPBACK

if TYPE_CHECKING:
    import argparse

    from router.config import Config

HELP = "make a running instance read its config again: applied live, or refused and kept"
TIMEOUT_S = 30.0


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("reload", help=HELP, description=HELP)
    add_config_option(parser)
    parser.add_argument("--url", help="the instance (default: the config's http host and port)")
    parser.add_argument(
        "--token",
        default=os.environ.get("SWITCHYARD_ADMIN_TOKEN"),
        help="an admin token, when the instance has tokens (default: $SWITCHYARD_ADMIN_TOKEN)",
    )
    parser.set_defaults(handler=reload)


def reload(args: argparse.Namespace) -> int:
    """Check the file here first: a file with errors is not sent, the instance keeps its
    config; a good one is read by the instance itself, which may still refuse the change."""
    config = load(args.config)
    if config is None:
        print("switchyard: nothing sent: the running instance keeps its config", file=sys.stderr)
        return EXIT_CONFIG
    return _ask(args, config)


def _ask(args: argparse.Namespace, config: Config) -> int:
    url = (args.url or _local_url(config)).rstrip("/") + "/admin/reload"
    request = urllib.request.Request(url, method="POST", data=b"")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            said = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        said = _reply(exc)
        if exc.code != 409:
            print(
                f"switchyard: reload not made: {exc.code} {said.get('error', '')}", file=sys.stderr
            )
            return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"switchyard: no instance answers at {url}: {exc}", file=sys.stderr)
        return 1
    running = said["config"]
    if said["applied"]:
        print(f"applied: {said['changed']} (config {running['hash']}, generation "
              f"{running['generation']})")  # fmt: skip
        return 0
    print(f"refused, the running config is kept (config {running['hash']}, generation "
          f"{running['generation']}):", file=sys.stderr)  # fmt: skip
    for issue in said["issues"]:
        print(f"  {issue}", file=sys.stderr)
    return EXIT_CONFIG


def _local_url(config: Config) -> str:
    host = config.http.host if config.http.host in LOOPBACK else "127.0.0.1"
    return f"http://{host}:{config.http.port}"


def _reply(error: urllib.error.HTTPError) -> dict[str, object]:
    try:
        reply: dict[str, object] = json.loads(error.read())
    except ValueError:
        reply = {}
    return reply
