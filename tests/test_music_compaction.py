"""Compaction of the music lake: an hour's small segments become one, no row is ever read
twice or lost, whatever the interleaving of two compactors, a late segment and a crash before
the sweep; on disk and in a real S3-compatible store.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
from servers import wait_for

from actors.music import LakeArchiver
from actors.music.compaction import Compactor, closed
from actors.music.lake import COMPACTED, Lake, partition_of, replaced_by
from actors.music.model import interaction
from router.testing import FakeContext, event

if TYPE_CHECKING:
    from servers import S3Server

HOUR = "date=2025-10-27/hour=14"


def rows(start: int, count: int, at: str = "2025-10-27T14:03:00") -> list[dict[str, Any]]:
    made = []
    for n in range(start, start + count):
        payload = {"user_id": n % 7, "action": "skip_song", "timestamp": at}
        made.append(interaction(event(payload, cls="music.interactions")) | {"event_id": f"e{n}"})
    return made


def read_ids(lake: Lake) -> list[str]:
    con = duckdb.connect()
    lake.register(con)
    return sorted(i for (i,) in con.execute("SELECT event_id FROM interactions").fetchall())


def expected(count: int) -> list[str]:
    return sorted(f"e{n}" for n in range(count))


def one(lake: Lake, partition: str = HOUR) -> Any:
    [listing] = lake.listings([partition])
    return listing


# --- which segments are read: the rule, on its own ---


def test_a_compaction_hides_what_it_replaces_even_through_an_older_one() -> None:
    replaced = replaced_by({
        "a": frozenset(), "b": frozenset(), "c": frozenset(),
        "c-1": frozenset({"a", "b"}),  # a first compaction, its sources not yet swept
        "c-2": frozenset({"c-1", "c"}),  # a second, over the first and a late segment
    })  # fmt: skip
    assert replaced == {"a": "c-2", "b": "c-2", "c": "c-2", "c-1": "c-2"}


def test_of_two_compactions_that_looked_at_different_times_the_larger_is_read() -> None:
    replaced = replaced_by({
        "a": frozenset(), "b": frozenset(), "late": frozenset(),
        "c-early": frozenset({"a", "b"}), "c-late": frozenset({"a", "b", "late"}),
    })  # fmt: skip
    assert set(replaced) == {"a", "b", "late", "c-early"}


def test_closed_means_the_hour_ended_at_least_after_s_ago() -> None:
    end = datetime(2025, 10, 27, 15, tzinfo=UTC)
    assert not closed(HOUR, end + timedelta(seconds=59), after_s=60)
    assert closed(HOUR, end + timedelta(seconds=60), after_s=60)


# --- the compactor on disk ---


def test_a_closed_hour_becomes_one_segment_and_the_open_one_is_left(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    for start in range(0, 50, 10):
        lake.write(rows(start, 10))
    now = datetime.now(UTC)
    lake.write(rows(50, 5, at=now.isoformat()))
    lake.write(rows(55, 5, at=now.isoformat()))

    done = Compactor(lake, after_s=0, grace_s=0).run(now)  # the hour now is still open

    assert (done.compacted, done.merged, done.rows) == (1, 5, 50)
    [live] = one(lake).live
    assert live.base_name.startswith(COMPACTED)
    assert len(one(lake, partition_of(now)).live) == 2
    assert read_ids(lake) == expected(60)
    assert len(one(lake).files) == 6  # the sources stay until the next pass's sweep
    assert Compactor(lake, after_s=0, grace_s=0).run(datetime.now(UTC)).deleted == 5
    assert [info.base_name for info in one(lake).files.values()] == [live.base_name]
    assert read_ids(lake) == expected(60)


def test_a_replaced_segment_outlives_its_compaction_by_the_grace(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.write(rows(0, 3))
    lake.write(rows(3, 3))
    compactor = Compactor(lake, after_s=0, grace_s=300)
    compactor.run()
    [compacted] = one(lake).live
    assert compacted.mtime is not None
    assert compactor.run(compacted.mtime + timedelta(seconds=299)).deleted == 0
    assert compactor.run(compacted.mtime + timedelta(seconds=300)).deleted == 2


def test_two_compactors_and_a_late_segment_in_any_order_read_every_row_once(
    tmp_path: Path,
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.write(rows(0, 4))
    lake.write(rows(4, 4))
    compactor = Compactor(lake, after_s=0, grace_s=0)
    early = one(lake)  # one compactor looks...
    lake.write(rows(8, 4))  # ...a late interaction of that hour arrives...
    late = one(lake)  # ...the other looks
    compactor.compact(late)
    assert read_ids(lake) == expected(12)
    compactor.compact(early)  # the slower one publishes last, over fewer segments
    assert read_ids(lake) == expected(12)
    compactor.run()  # sweep, then merge what is still live
    assert read_ids(lake) == expected(12)
    assert len(one(lake).live) == 1


def test_a_crash_before_the_sweep_leaves_nothing_read_twice_and_the_next_pass_finishes(
    tmp_path: Path,
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    for start in (0, 5, 10):
        lake.write(rows(start, 5))
    compactor = Compactor(lake, after_s=0, grace_s=0)
    compactor.compact(one(lake))  # published; the process dies before any sweep
    lake.write(rows(15, 5))  # the hour gets one more
    assert read_ids(lake) == expected(20)
    compactor.run()
    compactor.run()
    assert read_ids(lake) == expected(20)
    assert len(one(lake).files) == 1


def test_a_segment_still_being_built_is_never_read(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.write(rows(0, 2))
    lake.write(rows(2, 2))
    half = lake.scratch(HOUR, f"{COMPACTED}half.parquet")
    Path(half).write_bytes(b"PAR1 half")
    assert read_ids(lake) == expected(4)


async def test_the_archiver_compacts_closed_hours_on_its_own_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    lake_url = str(tmp_path / "lake")
    archiver = LakeArchiver(
        lake=lake_url, compact_every_s=0.05, compact_after_s=0, compact_grace_s=0
    )
    events = [
        event({"user_id": n, "action": "skip_song", "timestamp": "2025-10-27T14:03:00"})
        for n in range(6)
    ]
    for start in (0, 2, 4):
        await archiver.handle_batch(events[start : start + 2], FakeContext())
    lake = Lake(lake_url)
    await archiver.start()
    try:
        await wait_for(lambda: len(one(lake).files) == 1, timeout=10)
    finally:
        await archiver.stop()
    assert archiver._compacting is None
    assert sorted(r for (r,) in _query(lake, "SELECT event_id FROM interactions")) == sorted(
        e.id for e in events
    )


# --- in an object store ---


@pytest.mark.integration
async def test_compaction_in_an_object_store_reads_every_row_once(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the merge is built
    lake = Lake("s3://lake/music")
    for start in range(0, 30, 10):
        lake.write(rows(start, 10))
    compactor = Compactor(lake, after_s=0, grace_s=0)
    compactor.run()
    assert read_ids(lake) == expected(30)
    compactor.run()
    assert len(one(lake).files) == 1
    assert read_ids(lake) == expected(30)
    assert not os.listdir(tmp_path)  # nothing left of the merge on local disk


def _query(lake: Lake, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    lake.register(con)
    return con.execute(sql).fetchall()


def test_the_archivers_seconds_may_come_from_the_environment_as_text(tmp_path: Path) -> None:
    archiver = LakeArchiver(lake=str(tmp_path), compact_every_s="20", compact_after_s="60")
    assert (archiver.compact_every_s, archiver.compactor.after_s) == (20.0, 60.0)
    with pytest.raises(ValueError, match="soon"):
        LakeArchiver(lake=str(tmp_path), compact_every_s="soon")


def test_answers_read_each_compacted_footer_once_not_once_per_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq  # noqa: PLC0415

    from actors.api import Query  # noqa: PLC0415
    from actors.music.analytics import MusicAnalytics  # noqa: PLC0415

    lake = Lake(str(tmp_path / "lake"))
    lake.write(rows(0, 3))
    lake.write(rows(3, 3))
    Compactor(lake, after_s=0, grace_s=300).run()
    reads: list[str] = []
    real = pq.read_metadata

    def counted(path: str, **options: Any) -> Any:
        reads.append(path)
        return real(path, **options)

    monkeypatch.setattr(pq, "read_metadata", counted)
    analytics = MusicAnalytics(lake=str(tmp_path / "lake"))
    for _ in range(3):
        assert analytics.answer("activity", Query()).rows
    assert len(reads) == 1  # the one compacted segment, read by the first answer only
