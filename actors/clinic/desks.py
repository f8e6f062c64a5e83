"""Desks and stations with names: each patient a pool takes in is served at one of them.

A pool runs at most its class's `concurrency` handlers at once, so a clinic sets that to its
number of desks and gives the actor the same number (`desks: *desks`, one YAML anchor), and
every handler finds a free desk, the lowest-numbered one.
"""

from __future__ import annotations

import bisect
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


class Desks:
    """`count` desks named `<prefix>-1` ... `<prefix>-<count>`."""

    def __init__(self, prefix: str, count: int | str) -> None:
        self.count = int(count)
        if self.count < 1:
            raise ValueError(f"a clinic needs at least one {prefix}, not {count!r}")
        self.names = [f"{prefix}-{n}" for n in range(1, self.count + 1)]
        self._free = list(range(self.count))

    @contextlib.contextmanager
    def take(self) -> Iterator[str]:
        """The lowest free desk, for as long as the patient is at it."""
        if not self._free:
            raise RuntimeError(
                f"more patients at once than the {self.count} desks: set the class's "
                "concurrency to its number of desks"
            )
        index = self._free.pop(0)
        try:
            yield self.names[index]
        finally:
            bisect.insort(self._free, index)
