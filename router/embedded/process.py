"""What every embedded server shares: a child process on 127.0.0.1 that owns a data dir.

A server starts in a session of its own (a terminal's Ctrl-C reaches the service, which stops
it in order) with a parent-death signal (a SIGKILLed service never leaves it behind). `start`
returns once it answers; `stop` asks it to stop and kills it if it outlasts the timeout; every
error carries the last lines of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Self

from router.errors import EmbeddedServerError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.02
LOG_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ChildServer:
    """A server child process bound to 127.0.0.1, with its state and log in `data_dir`.

    Subclasses say how to prepare the command (`_prepare`, run in a thread: it may touch the
    disk), when the server is ready (`_answers`) and, if SIGTERM is not the way, how to ask it
    to stop (`_ask_to_stop`).
    """

    kind = "server"

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._fixed_port = port
        self.port = port
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when it is not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.kind}.log"

    async def start(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - part of the API
        """Launch the server and return once it answers; EmbeddedServerError if it does not."""
        if self._proc is not None:
            raise EmbeddedServerError(f"embedded {self.kind} already running (pid {self.pid})")
        if self.port is None:
            self.port = await asyncio.to_thread(free_port)
        try:
            self._proc = await self._spawn(self.port)
            await self._wait_ready(self._proc, self.port, timeout)
        except BaseException:
            await self.kill()
            self.port = self._fixed_port
            raise

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - part of the API
        """Ask the server to stop (it saves its state); SIGKILL if it outlasts `timeout`."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            await self._ask_to_stop(proc)
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                await self.kill()
                return
        self._proc = None

    async def kill(self) -> None:
        """SIGKILL the server and its forks without a shutdown: last resort and fault injection."""
        if self._proc is not None:
            await kill_process_group(self._proc)
            self._proc = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- what each server says ---

    def _prepare(self, port: int) -> tuple[Sequence[str], Sequence[int]]:
        """The command to run and the file descriptors it inherits; blocking, in a thread."""
        raise NotImplementedError

    async def _answers(self, proc: asyncio.subprocess.Process, port: int) -> bool:
        """Whether the server on `port` is ours and ready."""
        raise NotImplementedError

    async def _ask_to_stop(self, proc: asyncio.subprocess.Process) -> None:
        signal_process(proc, signal.SIGTERM)

    # --- shared ---

    def _ensure_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedServerError(f"cannot create data dir {self.data_dir}: {exc}") from exc

    async def _spawn(self, port: int) -> asyncio.subprocess.Process:
        command, fds = await asyncio.to_thread(self._prepare, port)
        try:
            return await self._exec(command, fds)
        finally:
            for fd in fds:
                os.close(fd)  # the child holds its copies; the parent keeps none

    async def _exec(self, command: Sequence[str], fds: Sequence[int]) -> asyncio.subprocess.Process:
        try:
            log = await asyncio.to_thread(self.log_path.open, "ab")
        except OSError as exc:
            raise EmbeddedServerError(f"cannot open {self.log_path}: {exc}") from exc
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=tuple(fds),
                preexec_fn=parent_death_hook(),
                start_new_session=True,  # a terminal's Ctrl-C reaches the service, not this
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot run {command[0]}: {exc}") from exc
        finally:
            log.close()
        self._spawned(proc)
        return proc

    def _spawned(self, proc: asyncio.subprocess.Process) -> None:
        """Called with the new process, before it is waited for."""

    async def _wait_ready(self, proc: asyncio.subprocess.Process, port: int, limit: float) -> None:
        """Return once our own process answers; raise if it exits or `limit` passes."""
        try:
            async with asyncio.timeout(limit):
                await self._poll_ready(proc, port)
        except TimeoutError:
            raise EmbeddedServerError(
                f"{self.kind} on port {port} did not answer within {limit}s{await self._tail()}"
            ) from None
        if proc.returncode is not None:
            raise EmbeddedServerError(
                f"{self.kind} exited with code {proc.returncode} while starting{await self._tail()}"
            )

    async def _poll_ready(self, proc: asyncio.subprocess.Process, port: int) -> None:
        """Return when the server answers as our process, or when the process has exited."""
        while True:
            if proc.returncode is not None or await self._answers(proc, port):
                return
            await asyncio.sleep(POLL_INTERVAL_S)  # a server gives no signal when it is up

    async def _tail(self) -> str:
        """The last lines of the server's log, formatted for an error message."""
        tail = await asyncio.to_thread(read_tail, self.log_path, LOG_TAIL_LINES)
        if not tail:
            return f"; {self.log_path} is empty"
        return f"; last lines of {self.log_path}:\n{tail}"


def read_tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def signal_process(
    proc: asyncio.subprocess.Process, sig: signal.Signals, *, group: bool = False
) -> None:
    """Signal a child without Popen.send_signal, whose poll() races asyncio's reaper."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)  # start_new_session made the child a group leader
        else:
            os.kill(proc.pid, sig)


async def kill_process_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a child started in its own session, with anything it forked, and reap it."""
    if proc.returncode is None:
        signal_process(proc, signal.SIGKILL, group=True)
    await proc.wait()


def parent_death_hook() -> Callable[[], None] | None:
    """On Linux, a preexec_fn making the child get SIGTERM when its parent dies.

    So a SIGKILLed service never leaves its servers behind. The kernel ties this to the
    forking *thread*, which is the event loop's thread here.
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
