"""Stalls: how often the machine holds up a process that does nothing but sleep.

Run as its own process beside a latency run (`bench.harness.stall_watch` starts it). It
wakes every millisecond and counts each wake that came more than `--over-ms` after it was
due. Such a process waits on nothing but a core, so what it counts is the machine's doing:
the other processes and the host. An event in flight while the service or redis-server is
held up like this is late by as much, whatever the service does.

Protocol on stdin/stdout, one line each:
  child  -> "ready"
  parent -> "stop" (or EOF)
  child  -> {"wakes", "stalls", "stalled_ms", "worst_ms"}
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

TICK_S = 0.001


def watch(over_s: float) -> dict[str, Any]:
    """Sleep a tick at a time until stdin has a line (or closes); the late wakes."""
    stalls: list[float] = []
    wakes = 0
    stdin = sys.stdin.fileno()
    due = time.perf_counter() + TICK_S
    while True:
        told, _, _ = select.select([stdin], [], [], TICK_S)
        now = time.perf_counter()
        if told:
            break
        wakes += 1
        if now - due > over_s:
            stalls.append(now - due)
        due = now + TICK_S
    return {
        "wakes": wakes,
        "stalls": len(stalls),
        "stalled_ms": round(sum(stalls) * 1000, 1),
        "worst_ms": round(max(stalls, default=0.0) * 1000, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--over-ms", type=float, default=2.0, help="a wake this late is a stall")
    args = parser.parse_args(argv)
    print("ready", flush=True)
    print(json.dumps(watch(args.over_ms / 1000)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
