"""Shared fixtures: real redis-server processes that the tests start on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import actors_for_tests
import aiohttp
import pytest
import pytest_asyncio
import redis as sync_redis
from prometheus_client import CollectorRegistry
from servers import BrokerServer, RedisServer, S3Server

from router.config import load_config
from router.embedded.cluster import EmbeddedCluster
from router.service.service import Service
from router.streams.client import RedisClient, connect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping

    from helpers import Serve

    from router.clock import Clock
    from router.config import Config

REPO = Path(__file__).resolve().parent.parent


def _on_uvloop() -> bool:
    return os.environ.get("SWITCHYARD_TEST_LOOP", "asyncio") == "uvloop"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """On uvloop, a test's timeout is kept from a thread. uvloop runs the SIGALRM handler of
    the default method inside a callback of its own and logs the failure it raises, so a hung
    test hung the whole run; the thread method prints every stack and ends the worker, which
    xdist reports as the test's failure and replaces."""
    if _on_uvloop() and config.getoption("timeout_method", None) is None:
        config.option.timeout_method = "thread"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop every test runs on: asyncio's own, or uvloop with SWITCHYARD_TEST_LOOP=uvloop
    (`service.loop: auto` runs the service on uvloop where it is installed)."""
    if not _on_uvloop():
        return {"asyncio": asyncio.new_event_loop}
    import uvloop  # noqa: PLC0415  (optional: only this run needs it)

    return {"uvloop": uvloop.new_event_loop}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedisServer]:
    """One redis-server for the whole session; never the machine's own on port 6379."""
    server = RedisServer(tmp_path_factory.mktemp("redis-session"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def single_redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied first (it is ours, so FLUSHALL is allowed)."""
    with sync_redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def redis_url(single_redis_url: str) -> str:
    """The Redis a test runs on: the session server. A module that runs its tests on the
    cluster too overrides this with `any_redis_url`."""
    return single_redis_url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedCluster]:
    """One local 3-master Redis Cluster for the whole session, on free ports."""
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    await cluster.start()
    yield cluster
    await cluster.stop()


@pytest_asyncio.fixture
async def cluster_url(redis_cluster: EmbeddedCluster) -> str:
    """The session cluster's `redis+cluster://` URL, every master emptied first."""
    await redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(params=["single", "cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """Run the test twice: on the session redis-server, and on the session Redis Cluster."""
    fixture = "single_redis_url" if request.param == "single" else "cluster_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest_asyncio.fixture(name="redis")
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    """An asyncio client on the test's emptied Redis (a cluster client for a cluster URL)."""
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own, free to stop, kill and restart."""
    server = RedisServer(tmp_path / "redis")
    await server.start()
    yield server
    await server.stop()


REPO_WEBHOOK_SECRET = "repo-config-secret"


@pytest.fixture
def repo_config(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Config:
    """The repository's own config.yaml on the test's Redis: HTTP on a free port, no MQTT, the
    music lake in the test's directory (`tmp_path / "lake"`), rolled every 200 ms, and the
    high lane in the service's process, where the test reads its counters."""
    monkeypatch.setenv("SWITCHYARD_REDIS_URL", redis_url)
    monkeypatch.setenv("SWITCHYARD_MUSIC_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("SWITCHYARD_DOORBELL_LAKE", str(tmp_path / "doorbell"))
    monkeypatch.setenv("SWITCHYARD_MEDIA_STORE", str(tmp_path / "media"))
    monkeypatch.setenv("SWITCHYARD_MUSIC_ROLL_MS", "200")
    monkeypatch.setenv("SWITCHYARD_HTTP_PORT", "0")
    monkeypatch.setenv("SWITCHYARD_MQTT_URL", "off")
    monkeypatch.setenv("SWITCHYARD_CLINIC_OBSERVATION_S", "0.2")  # the timed wait, shortened
    monkeypatch.setenv("SWITCHYARD_WEBHOOK_SECRET", REPO_WEBHOOK_SECRET)
    monkeypatch.setenv("SWITCHYARD_HIGH_LANE_WORKERS", "0")  # counters and probes in-process
    return load_config(REPO / "config.yaml")


@pytest.fixture
def probes() -> Iterator[dict[str, actors_for_tests.Probe]]:
    """The test actors' records (`actors_for_tests.PROBES`), empty before and after the test."""
    actors_for_tests.reset()
    yield actors_for_tests.PROBES
    actors_for_tests.reset()


@pytest.fixture
def steered_runs() -> Iterator[None]:
    """The `Steered` test actors' run records (`actors_for_tests.RUNS`), empty before and after."""
    actors_for_tests.reset_runs()
    yield
    actors_for_tests.reset_runs()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for talking to a service under test, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def serve() -> Serve:
    """`async with serve(config) as service:` runs a Service on a fresh metrics registry.

    On the way out it stops the service (a no-op when the test already did).
    """

    @contextlib.asynccontextmanager
    async def run(config: Config, clock: Clock | None = None) -> AsyncIterator[Service]:
        service = Service(config, registry=CollectorRegistry(), clock=clock)
        try:
            async with service:
                yield service
        finally:
            await service.stop()

    return run


# --- MQTT brokers (appended for the MQTT tests) ---

NO_MOSQUITTO = (
    "needs mosquitto (MQTT 5 and sessions persisted on disk); not on PATH, and the amqtt "
    "fallback speaks only MQTT 3.1.1 and keeps sessions in memory"
)


@pytest_asyncio.fixture
async def mqtt_broker(tmp_path: Path) -> AsyncIterator[BrokerServer]:
    """An MQTT broker of the test's own on a free port (never 1883): mosquitto, else amqtt.

    Free to stop, kill and restart; it comes back on the same port with the same data dir.
    """
    broker = BrokerServer(tmp_path / "mqtt-broker")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.kill()


@pytest_asyncio.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[BrokerServer]:
    """Like `mqtt_broker`, but skips the test when mosquitto is not installed."""
    if shutil.which("mosquitto") is None:
        pytest.skip(NO_MOSQUITTO)
    broker = BrokerServer(tmp_path / "mosquitto")
    assert broker.kind == "mosquitto"
    await broker.start()
    try:
        yield broker
    finally:
        await broker.kill()


@pytest.fixture
async def s3(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Server]:
    """A real S3-compatible server (moto's), with the environment pointing at it and a bucket
    `lake`."""
    server = S3Server()
    await server.start()
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    server.create_bucket("lake")
    try:
        yield server
    finally:
        await server.stop()
