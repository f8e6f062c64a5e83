"""An embedded MQTT broker the service starts and stops itself (`mqtt.url: embedded`).

mosquitto when it is installed (MQTT v5, persistent sessions on disk); otherwise amqtt, a
pure-Python broker that ships with Switchyard's dependencies (MQTT 3.1.1, sessions in memory).
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import signal
import sys
from pathlib import Path
from typing import Literal

from router.embedded import (
    free_port,
    kill_process_group,
    parent_death_hook,
    read_tail,
    signal_process,
)
from router.errors import EmbeddedServerError

_HOST = "127.0.0.1"
_POLL_INTERVAL = 0.02

BrokerKind = Literal["mosquitto", "amqtt"]


class EmbeddedBroker:
    """A broker child process bound to 127.0.0.1 with its state in `data_dir`."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, binary: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        mosquitto = shutil.which(binary or "mosquitto")
        self.kind: BrokerKind = "mosquitto" if mosquitto else "amqtt"
        self._mosquitto = mosquitto
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedServerError("embedded broker has no port yet: call start() first")
        return f"mqtt://{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The newest MQTT version this broker speaks."""
        return "5" if self.kind == "mosquitto" else "3.1.1"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.kind}.log"

    async def start(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - mirrors EmbeddedRedis
        """Launch the broker and return once it accepts connections."""
        if self._proc is not None:
            raise EmbeddedServerError(f"embedded broker already running (pid {self._proc.pid})")
        if self.port is None:
            self.port = await asyncio.to_thread(free_port)
        command = await asyncio.to_thread(self._prepare, self.port)
        log = await asyncio.to_thread(self.log_path.open, "ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=parent_death_hook(),
                start_new_session=True,  # a terminal's Ctrl-C reaches the service, not the broker
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot run {command[0]}: {exc}") from exc
        finally:
            log.close()
        try:
            async with asyncio.timeout(timeout):
                await self._wait_listening(self._proc, self.port)
        except TimeoutError:
            await self.kill()
            raise EmbeddedServerError(
                f"{self.kind} did not listen on port {self.port} within {timeout}s{self._tail()}"
            ) from None

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - mirrors EmbeddedRedis
        """SIGTERM (mosquitto saves its sessions), then SIGKILL after `timeout`."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            signal_process(proc, signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                await self.kill()
                return
        self._proc = None

    async def kill(self) -> None:
        if self._proc is not None:
            await kill_process_group(self._proc)
            self._proc = None

    def _prepare(self, port: int) -> list[str]:
        """Write the broker's config file (blocking; run in a thread) and return its command."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedServerError(f"cannot create data dir {self.data_dir}: {exc}") from exc
        if self._mosquitto is not None:
            config = self.data_dir / "mosquitto.conf"
            config.write_text(self._mosquitto_config(port))
            return [self._mosquitto, "-c", str(config)]
        config = self.data_dir / "amqtt.yaml"
        config.write_text(self._amqtt_config(port))
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)]

    def _mosquitto_config(self, port: int) -> str:
        return "\n".join(
            [
                f"listener {port} {_HOST}",
                "allow_anonymous true",
                f"user {getpass.getuser()}",  # as root, mosquitto would switch to its own user
                "persistence true",
                f"persistence_location {self.data_dir}/",
                "autosave_interval 1",
                "max_queued_messages 1000000",  # held for a stopped subscriber with a session
                "max_queued_bytes 0",
                f"log_dest file {self.log_path}",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "",
            ]
        )

    def _amqtt_config(self, port: int) -> str:
        return "\n".join(
            [
                "listeners:",
                "  default:",
                "    type: tcp",
                f"    bind: {_HOST}:{port}",
                "plugins:",
                "  amqtt.plugins.authentication.AnonymousAuthPlugin:",
                "    allow_anonymous: true",
                "",
            ]
        )

    async def _wait_listening(self, proc: asyncio.subprocess.Process, port: int) -> None:
        while True:
            if proc.returncode is not None:
                raise EmbeddedServerError(
                    f"{self.kind} exited with code {proc.returncode} while starting{self._tail()}"
                )
            try:
                _, writer = await asyncio.open_connection(_HOST, port)
            except OSError:
                await asyncio.sleep(_POLL_INTERVAL)
                continue
            writer.close()
            await writer.wait_closed()
            return

    def _tail(self) -> str:
        tail = read_tail(self.log_path, 20)
        return f"; last lines of {self.log_path}:\n{tail}" if tail else ""
