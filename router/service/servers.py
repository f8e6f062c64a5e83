"""What a process connects to: Redis (the embedded server when `redis.url: embedded`) and the
embedded MQTT broker, with the URL files that let commands find embedded servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from router.embedded.broker import EmbeddedBroker
from router.embedded.redis import EmbeddedRedis
from router.errors import EmbeddedServerError
from router.streams.client import RedisClient, connect

if TYPE_CHECKING:
    from router.config import MqttConfig, RedisConfig

log = structlog.get_logger("switchyard.servers")

URL_FILE = "url"


def resolve_redis_url(config: RedisConfig) -> str:
    """The Redis a command should talk to; for `embedded`, the running service's server."""
    if config.url != "embedded":
        return config.url
    path = config.data_dir / URL_FILE
    try:
        return path.read_text().strip()
    except OSError:
        raise EmbeddedServerError(
            f"the embedded Redis is not running (no {path}); start the service, "
            "or set SWITCHYARD_REDIS_URL"
        ) from None


async def broker_url(config: MqttConfig) -> str | None:
    """The broker to publish to: the configured one, the embedded one while it runs (any
    process of the service reads its URL), or None without MQTT."""
    if config.url == "off":
        return None
    if config.url != "embedded":
        return config.url
    try:
        return (await asyncio.to_thread((Path(config.data_dir) / URL_FILE).read_text)).strip()
    except OSError:
        return None


def consumer_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def redis_options(config: RedisConfig) -> dict[str, Any]:
    """The AUTH password and TLS files the config gives beside its URL, as client settings."""
    options: dict[str, Any] = {"password": config.password} if config.password else {}
    files = (("ssl_ca_certs", config.ca_file), ("ssl_certfile", config.cert_file),
             ("ssl_keyfile", config.key_file))  # fmt: skip
    options.update({setting: str(path) for setting, path in files if path is not None})
    return options


class RedisConnection:
    """The Redis of one process: its client (one connection pool), and the embedded server
    it started, if any."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.embedded: EmbeddedRedis | None = None
        self.client: RedisClient | None = None

    @property
    def url(self) -> str:
        return self.embedded.url if self.embedded else self.config.url

    async def open(self) -> RedisClient:
        """Start the embedded server if configured, connect, and PING: fail at start, not at
        the first event."""
        config = self.config
        if config.url == "embedded":
            self.embedded = EmbeddedRedis(config.data_dir)
            await self.embedded.start()
            await _write_url(config.data_dir, self.embedded.url)
            log.info("embedded redis started", url=self.embedded.url, data_dir=str(config.data_dir))
        self.client = connect(
            self.url,
            max_connections=config.max_connections,
            socket_keepalive=True,
            socket_connect_timeout=2,
            socket_timeout=config.block_ms / 1000 + 5,  # a blocked read must not time out
            retry=Retry(NoBackoff(), 1),  # one fresh connection when a pooled one went stale
            **redis_options(config),
        )
        try:
            await self.client.ping()
        except RedisClusterException as exc:  # no node of a cluster answered
            raise ConnectionError(str(exc)) from exc
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.embedded is not None:
            await self.embedded.stop()
            _forget_url(self.config.data_dir)


class MqttBroker:
    """The broker a process subscribes to: the configured one, or the embedded one it starts."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.embedded: EmbeddedBroker | None = None

    async def open(self) -> tuple[str, str]:
        """The broker's URL and the MQTT version to speak, starting the embedded one."""
        config = self.config
        if config.url != "embedded":
            return config.url, config.protocol
        self.embedded = broker = EmbeddedBroker(config.data_dir)
        await broker.start()
        await _write_url(config.data_dir, broker.url)
        log.info("embedded mqtt broker started", kind=broker.kind, url=broker.url)
        if broker.protocol != config.protocol:
            log.warning("embedded broker speaks only MQTT 3.1.1", kind=broker.kind)
        return broker.url, broker.protocol

    async def close(self) -> None:
        if self.embedded is not None:
            await self.embedded.stop()
            _forget_url(self.config.data_dir)


async def _write_url(data_dir: Path, url: str) -> None:
    await asyncio.to_thread((Path(data_dir) / URL_FILE).write_text, url)


def _forget_url(data_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (Path(data_dir) / URL_FILE).unlink()
