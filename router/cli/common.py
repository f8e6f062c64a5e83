"""What every command shares: the config file it reads (every actor imported, so a typo fails
here), logging, and one way to say that Redis or an embedded server is not there."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any, TypeVar

from router.config import load_config
from router.errors import ConfigError, EmbeddedServerError
from router.logs import configure_logging
from router.service.reload import check_actors
from router.service.servers import redis_options, resolve_redis_url
from router.streams import client
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine

    from router.config import Config
    from router.streams.client import RedisClient

DEFAULT_CONFIG = os.environ.get("SWITCHYARD_CONFIG", "config.yaml")
EXIT_CONFIG = 2
T = TypeVar("T")


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
    )


def load(path: str) -> Config | None:
    """The config at `path`, every actor imported; None (errors printed) when it is bad."""
    try:
        config = load_config(path)
        check_actors(config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    return config


def logging_for(config: Config, default_level: str | None = None) -> None:
    configure_logging(config.service.log_format, default_level or config.service.log_level)


def connect(config: Config) -> RedisClient:
    """A client for a command: the configured Redis (or Cluster), or the running service's
    embedded one."""
    return client.connect(
        resolve_redis_url(config.redis), socket_connect_timeout=2, **redis_options(config.redis)
    )


def run_against_redis(
    work: Callable[[], Coroutine[Any, Any, int]], *, interrupted: int | None = None
) -> int:
    """Run a command's async part; 1 with a clear line when Redis or an embedded server is
    not there. `interrupted` is the exit code for Ctrl-C (None: Ctrl-C raises)."""
    try:
        return asyncio.run(work())
    except EmbeddedServerError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
    except UNAVAILABLE as exc:
        print(f"switchyard: cannot reach Redis: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        return interrupted
    return 1


def with_config(command: Callable[[argparse.Namespace, Config], int]) -> Callable[..., int]:
    """A command that needs the config: exits 2 with its errors when the file is bad."""

    def run(args: argparse.Namespace) -> int:
        config = load(args.config)
        return EXIT_CONFIG if config is None else command(args, config)

    return run
