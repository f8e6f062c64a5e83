"""The latency part's Switchyard runs (`bench.latency`): each times every event it accepted,
once, and none of the warm-up's, whether the pool runs in the service or in a worker.

The figures are read off the service's histograms once every accepted event is acknowledged;
a run that read them after a fixed pause would leave out exactly the late events the 2 ms
target is about.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bench.latency import LatencySettings, run_switchyard, run_with_worker
from bench.noop import Recorder

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from actors.api import Context
    from router.streams.envelope import Envelope

SETTINGS = LatencySettings(rate=200, seconds=0.5, warmup_seconds=0.2, connections=4)
HANDLING_S = 0.5  # longer than the 0.2 s a run once waited after its last POST


async def test_a_run_times_each_accepted_event_and_none_of_the_warm_up(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a handler that takes longer than a fixed pause would wait, the last events are
    acknowledged well after the last POST, and the warm-up's after the window opened."""
    notes_its_wait = Recorder.handle

    async def slow(self: Recorder, event: Envelope, ctx: Context) -> None:
        await notes_its_wait(self, event, ctx)
        await asyncio.sleep(HANDLING_S)  # the handler's work, after its start is noted

    monkeypatch.setattr(Recorder, "handle", slow)
    result = await run_switchyard(redis_url, SETTINGS, 2, tmp_path)

    assert result["sent"] == result["accepted"] == 100
    assert result["ingest_to_ack"]["count"] == 100  # the warm-up's 40 not among them
    assert result["ingest_to_handler_start"]["count"] == 100  # timed by the actor, the same


async def test_a_run_with_the_lane_in_a_worker_counts_the_worker_s_events(
    redis_url: str, tmp_path: Path
) -> None:
    result = await run_with_worker(redis_url, SETTINGS, 1, tmp_path)

    assert result["sent"] == result["accepted"] == 100
    assert result["ingest_to_ack"]["count"] == 100
