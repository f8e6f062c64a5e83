"""Compaction of the music lake: an hour's many small segments become one (`actors.api`'s
`Compactor`, which the music lake shares with every lake; see it for how and why). Music
keeps its interactions forever: no retention unless the archiver is given one."""

from __future__ import annotations

from actors.api import CompactionPass as Pass
from actors.api import Compactor
from actors.api import partition_closed as closed

__all__ = ["Compactor", "Pass", "closed"]
