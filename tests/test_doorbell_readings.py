"""Doorbell readings rolled up per minute: partial rollups per batch in a lake, combined per
minute when asked; hostile values fail alone; retention deletes old minutes (any lake)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from actors.api import Compactor, PermanentFailure, Query
from actors.doorbell import ReadingSummary
from actors.doorbell.analytics import DoorbellAnalytics
from actors.doorbell.readings import readings_lake
from actors.music.compaction import Compactor as MusicCompactor
from actors.music.lake import Lake as MusicLake
from router.testing import FakeContext, event

if TYPE_CHECKING:
    from pathlib import Path

    from router.streams.envelope import Envelope

MINUTE = 1_749_999_600.0  # 2025-06-15T15:00:00Z
SINCE = datetime(2025, 6, 1, tzinfo=UTC)  # by default, the answers look back a day only


def reading(device: str, kind: str, value: Any, at: float) -> Envelope:
    envelope = event({"value": value}, key=device, topic=f"doorbell/{device}/{kind}")
    return envelope._replace(ingest_ts=at)


async def summarise(lake: str, readings: list[Envelope], **ctx: Any) -> FakeContext:
    context = FakeContext(readings[0], **ctx)
    await ReadingSummary(lake=lake, compact_every_s=0).handle_batch(readings, context)
    return context


def per_minute(lake: str, device: str, **query: Any) -> list[dict[str, Any]]:
    query.setdefault("since", SINCE)
    found = DoorbellAnalytics(lake=lake).answer("readings", Query(user=device, **query))
    return [dict(zip(found.columns, row, strict=True)) for row in found.to_json()["rows"]]


async def test_two_batches_of_one_minute_combine_and_minutes_stay_apart(tmp_path: Path) -> None:
    lake = str(tmp_path / "doorbell")
    await summarise(lake, [
        reading("d1", "temperature", 20.0, MINUTE + 1), reading("d1", "temperature", 24.0,
        MINUTE + 50), reading("d2", "temperature", 99.0, MINUTE + 2),
        reading("d1", "light", 300, MINUTE + 3),
    ])  # fmt: skip
    await summarise(lake, [
        reading("d1", "temperature", 18.0, MINUTE + 30),  # the same minute, another batch
        reading("d1", "temperature", 21.0, MINUTE + 61),  # the next minute
    ])  # fmt: skip

    rows = per_minute(lake, "d1", kind="temperature")
    assert [
        (r["minute"], r["count"], r["min"], r["max"], r["mean"], r["last"]) for r in rows
    ] == [
        ("2025-06-15T15:00:00+00:00", 3, 18.0, 24.0, pytest.approx(62 / 3), 24.0),
        ("2025-06-15T15:01:00+00:00", 1, 21.0, 21.0, 21.0, 21.0),
    ]  # fmt: skip
    assert rows[0]["last_at"] == "2025-06-15T15:00:50+00:00"
    assert {(r["kind"], r["count"]) for r in per_minute(lake, "d1")} == {
        ("temperature", 3), ("temperature", 1), ("light", 1),
    }  # fmt: skip
    assert per_minute(lake, "d2")[0]["max"] == 99.0


@pytest.mark.parametrize(
    "value",
    [True, "warm", float("inf"), float("nan"), 10**400, 1e13, {"v": 1}, [1], None],
    ids=lambda value: repr(value)[:12],
)
async def test_a_hostile_reading_fails_alone(tmp_path: Path, value: Any) -> None:
    lake = str(tmp_path / "doorbell")
    bad = reading("d1", "temperature", value, MINUTE + 5)
    ctx = await summarise(lake, [reading("d1", "temperature", 20.0, MINUTE), bad])
    assert list(ctx.failed) == [bad.id]
    assert isinstance(ctx.failed[bad.id], PermanentFailure)
    [row] = per_minute(lake, "d1")
    assert (row["count"], row["mean"]) == (1, 20.0)


async def test_a_batch_run_again_counts_each_reading_once(tmp_path: Path) -> None:
    lake = str(tmp_path / "doorbell")
    first = [reading("d1", "light", 100, MINUTE), reading("d1", "light", 200, MINUTE + 1)]
    await summarise(lake, first)
    later = reading("d1", "light", 600, MINUTE + 2)
    await summarise(lake, [*first, later], taken_over={e.id for e in first})  # after a crash
    [row] = per_minute(lake, "d1")
    assert (row["count"], row["mean"], row["last"]) == (3, 300.0, 600.0)


async def test_the_answer_is_bounded_and_relative_ages_work(tmp_path: Path) -> None:
    lake = str(tmp_path / "doorbell")
    now = time.time()
    await summarise(lake, [
        *(reading("d1", "light", n, now - 60 * n) for n in range(5)),
        reading("d1", "light", 9, now - 7200), reading("d1", "light", 8, now - 3 * 86400),
    ])  # fmt: skip
    recent = per_minute(lake, "d1", since=datetime.now(UTC) - timedelta(hours=1))
    assert [r["last"] for r in recent] == [4, 3, 2, 1, 0]  # oldest first
    assert [r["last"] for r in per_minute(lake, "d1", limit=2)] == [1, 0]  # the latest two
    assert [r["last"] for r in per_minute(lake, "d1", since=None)] == [9, 4, 3, 2, 1, 0]  # a day
    parsed = Query.parse("d1", since="1h", limit="2")
    assert parsed.since is not None
    assert abs(parsed.since.timestamp() - (time.time() - 3600)) < 5


def test_retention_deletes_partitions_older_than_it_and_music_keeps_everything(
    tmp_path: Path,
) -> None:
    lake = readings_lake(str(tmp_path / "doorbell"))
    now = datetime(2025, 6, 15, 15, 30, tzinfo=UTC)
    old, young = now - timedelta(days=31), now - timedelta(days=29)
    row = {"device_id": "d1", "kind": "light", "count": 1, "sum": 1.0, "min": 1.0,
           "max": 1.0, "last": 1.0, "event_ids": ["e"]}  # fmt: skip
    lake.write([row | {"minute": moment, "last_at": moment} for moment in (old, young, now)])
    done = Compactor(lake, retention_days=30).run(now)
    assert done.expired == 1
    assert [listing.partition for listing in lake.listings()] == [
        "date=2025-05-17/hour=15", "date=2025-06-15/hour=15",
    ]  # fmt: skip
    assert not (tmp_path / "doorbell/readings/date=2025-05-15").exists()  # the folder too

    music = MusicLake(str(tmp_path / "music"))
    assert MusicCompactor(music).retention_days is None
    with pytest.raises(ValueError, match="positive"):
        Compactor(lake, retention_days=0)
