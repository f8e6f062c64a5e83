"""An embedded MQTT broker the service starts and stops itself (`mqtt.url: embedded`).

mosquitto when it is installed (MQTT v5, persistent sessions on disk); otherwise amqtt, a
pure-Python broker that ships with Switchyard's dependencies (MQTT 3.1.1, sessions in memory).
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import sys
from typing import TYPE_CHECKING, Literal

from router.embedded.process import HOST, ChildServer
from router.errors import EmbeddedServerError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

BrokerKind = Literal["mosquitto", "amqtt"]


class EmbeddedBroker(ChildServer):
    """A broker child process bound to 127.0.0.1 with its state in `data_dir`."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, binary: str | None = None
    ) -> None:
        super().__init__(data_dir, port=port)
        mosquitto = shutil.which(binary or "mosquitto")
        self.kind: BrokerKind = "mosquitto" if mosquitto else "amqtt"
        self._mosquitto = mosquitto

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedServerError("embedded broker has no port yet: call start() first")
        return f"mqtt://{HOST}:{self.port}"

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The newest MQTT version this broker speaks."""
        return "5" if self.kind == "mosquitto" else "3.1.1"

    def _prepare(self, port: int) -> tuple[Sequence[str], Sequence[int]]:
        """Write the broker's config file and return its command."""
        self._ensure_data_dir()
        if self._mosquitto is not None:
            config = self.data_dir / "mosquitto.conf"
            config.write_text(self._mosquitto_config(port))
            return [self._mosquitto, "-c", str(config)], []
        config = self.data_dir / "amqtt.yaml"
        config.write_text(self._amqtt_config(port))
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)], []

    async def _answers(self, proc: asyncio.subprocess.Process, port: int) -> bool:
        """True once the broker accepts connections (mosquitto SIGTERMed saves its sessions)."""
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    def _mosquitto_config(self, port: int) -> str:
        return "\n".join(
            [
                f"listener {port} {HOST}",
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
                f"    bind: {HOST}:{port}",
                "plugins:",
                "  amqtt.plugins.authentication.AnonymousAuthPlugin:",
                "    allow_anonymous: true",
                "",
            ]
        )
