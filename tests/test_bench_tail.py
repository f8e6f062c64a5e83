"""`bench.tail`, which says where a single-event POST's tail comes from: its counts of
arrivals and clusters, and one short run from the command line as the bench README shows it.

Its figures back a claim about the machine rather than the service (the late events are not
the sender's bursts, and the service's loop was not running while they waited): a miscount
would back the wrong one.
"""

from __future__ import annotations

import re
import subprocess
import sys

from bench.tail import arrivals_before, clusters


def test_arrivals_are_counted_in_the_window_up_to_an_event() -> None:
    ingests = [0.000, 0.001, 0.002, 0.0065, 0.010, 0.0101]
    assert arrivals_before(ingests, 0.002) == 3  # itself and the two before
    assert arrivals_before(ingests, 0.0065) == 2  # 0.0015 .. 0.0065: 0.002 and itself
    assert arrivals_before(ingests, 0.0101) == 3  # 0.0065, 0.010 and itself


def test_late_events_closer_than_the_gap_are_one_cluster() -> None:
    late = [(0.020, 0.024), (0.000, 0.005), (0.004, 0.006), (0.013, 0.015)]
    grouped = clusters(late, gap_s=0.010)
    assert grouped == [[(0.000, 0.005), (0.004, 0.006), (0.013, 0.015), (0.020, 0.024)]]
    assert len(clusters(late, gap_s=0.005)) == 3  # 0.004 -> 0.013 and 0.013 -> 0.020 split
    assert clusters([]) == []


def test_a_short_run_accounts_for_every_event_it_posted() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.tail", "--rate", "200", "--seconds", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    head = re.search(r"^([\d,]+) events of ([\d,]+) at 200/s", done.stdout, re.MULTILINE)
    assert head is not None, done.stdout
    assert head.group(1) == head.group(2) == "200"  # every POSTed event was handled and timed
    assert "an idle process beside it woke over 2 ms late" in done.stdout
