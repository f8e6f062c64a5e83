"""The collector setting a service applies once started (router/heap.py)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from router import heap
made_at_start = [[i] for i in range(1000)]
heap.settle()
frozen = gc.get_freeze_count()
heap.settle()  # a second service in the same process changes nothing
later = [[i] for i in range(10)]
print(frozen >= 1000, gc.get_freeze_count() == frozen, gc.get_threshold()[0])
print(gc.is_tracked(later[0]), any(o is later[0] for o in gc.get_objects(0)))
"""


def test_start_up_objects_are_frozen_once_and_new_ones_still_collected() -> None:
    lines = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert lines == ["True True 10000", "True True"]
