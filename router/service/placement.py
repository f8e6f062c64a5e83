"""Which lanes, and so which classes, a process runs pools of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.config import Config, LaneConfig
    from router.service.lane_workers import Assignment


@dataclass(frozen=True, slots=True)
class Placement:
    """A lane worker runs its own lane; the service runs every lane without workers. Only
    these share the process's capacity: a lane run elsewhere reserves nothing here."""

    config: Config
    assignment: Assignment | None = None

    def lanes(self) -> list[LaneConfig]:
        if self.assignment is not None:
            return [lane for lane in self.config.lanes if lane.name == self.assignment.lane]
        return [lane for lane in self.config.lanes if not lane.workers]

    def classes(self) -> list[str]:
        """The classes whose pools run in this process."""
        lanes = {lane.name for lane in self.lanes()}
        return [name for name, cls in self.config.classes.items() if cls.lane in lanes]
