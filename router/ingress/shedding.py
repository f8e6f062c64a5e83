"""Load shedding by refusal: a class past its bound refuses new events for a while.

Opt-in per class (`shed: {action: refuse}`): HTTP answers 503 with Retry-After, MQTT holds
its batch unacknowledged. The stream figures come from the service's stats loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.errors import ClassOverloaded

if TYPE_CHECKING:
    from collections.abc import Mapping

    from router.clock import Clock
    from router.config import Config
    from router.streams.transport import StreamStats


class Shedding:
    """Which classes refuse events now, by their backlog and its age."""

    def __init__(self, config: Config, clock: Clock) -> None:
        self.clock = clock
        self.configure(config)
        self.stats: Mapping[str, StreamStats] = {}  # kept fresh by the service's stats loop

    def configure(self, config: Config) -> None:
        """The classes that refuse events past their bounds, by this (reloaded) config."""
        self.refusing = {
            name: cls.shed
            for name, cls in config.classes.items()
            if cls.shed is not None and cls.shed.action == "refuse"
        }

    def check(self, cls: str) -> None:
        """Raise ClassOverloaded when `cls` sheds load by refusal and is past its bound."""
        shed = self.refusing.get(cls)
        stats = self.stats.get(cls)
        if shed is None or stats is None:
            return
        if shed.max_backlog is not None and stats.backlog + stats.pending > shed.max_backlog:
            raise ClassOverloaded(
                cls, f"{stats.backlog + stats.pending} waiting > {shed.max_backlog}"
            )
        if shed.max_age_ms is not None and stats.oldest_ms is not None:
            age_ms = self.clock.wall() * 1000 - stats.oldest_ms
            if age_ms > shed.max_age_ms:
                raise ClassOverloaded(
                    cls, f"oldest waiting {age_ms / 1000:.1f}s > {shed.max_age_ms / 1000:g}s"
                )
