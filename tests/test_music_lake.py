"""The music lake: interactions read into rows whatever a device sent, written as Parquet
segments once each, on disk and in a real S3-compatible store (moto's server), and answered
over HTTP; a SIGKILL between a segment's publication and its ack, and a store that goes away
and comes back.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
from helpers import GROUP, Serve, events_url, processed
from servers import S3Server, ServiceProcess, free_port, wait_for

from actors.api import PermanentFailure
from actors.music import LakeArchiver
from actors.music.lake import SUFFIX, TEMPORARY, Lake
from actors.music.model import interaction
from actors.music.schema import TS_INVALID, TS_MISSING, TS_SOURCE
from router.config import parse_config
from router.streams import keys
from router.testing import FakeContext, event

if TYPE_CHECKING:
    import aiohttp
    from redis.asyncio import Redis

    from router.config import Config

REPO = Path(__file__).resolve().parent.parent
BRIEF_EXAMPLE = {"user_id": 10, "action": "skip_song", "timestamp": "2025-10-27T14:03:00"}


# --- rows: every interaction kept, unusable values counted ---


def row_of(payload: dict[str, Any], action: str = "skip_song") -> dict[str, Any]:
    return interaction(event({"action": action, **payload}, cls="music.interactions"))


def ts_of(payload: dict[str, Any]) -> tuple[str, str, list[str]]:
    row = row_of({"user_id": 1, **payload})
    return row["ts"].isoformat(), row["ts_status"], row["invalid"]


def test_timestamps_are_read_in_every_usual_form_and_kept_in_utc() -> None:
    assert ts_of(BRIEF_EXAMPLE)[:2] == ("2025-10-27T14:03:00+00:00", TS_SOURCE)  # no zone: UTC
    assert ts_of({"timestamp": "2025-10-27T16:03:00+02:00"})[0] == "2025-10-27T14:03:00+00:00"
    assert ts_of({"timestamp": "2025-10-27T14:03:00Z"})[0] == "2025-10-27T14:03:00+00:00"
    assert ts_of({"timestamp": 1761573780})[0] == "2025-10-27T14:03:00+00:00"  # Unix seconds
    assert ts_of({"timestamp": 1761573780000})[0] == "2025-10-27T14:03:00+00:00"  # and ms


@pytest.mark.parametrize(
    "timestamp", ["not a time", True, 1e300, "99999-01-01T00:00:00", [], {"at": 1}, -1e18]
)
def test_an_unusable_timestamp_keeps_the_row_at_its_ingest_time_and_is_counted(
    timestamp: Any,
) -> None:
    row = row_of({"user_id": 1, "timestamp": timestamp})
    assert (row["ts_status"], row["invalid"]) == (TS_INVALID, ["timestamp"])
    assert row["ts"] == row["ingest_ts"]
    assert row["ts_raw"] == str(timestamp)[:64]


def test_a_missing_timestamp_is_not_an_invalid_one() -> None:
    row = row_of({"user_id": 1})
    assert (row["ts_status"], row["invalid"], row["ts_raw"]) == (TS_MISSING, [], None)


def test_hostile_values_where_text_goes_are_dropped_and_named_not_the_row() -> None:
    row = row_of(
        {
            "user_id": 7,
            "artist": True,
            "genre": {"name": "jazz"},
            "device": 2.5,
            "screen": "x" * 10_000,
            "seconds_listened": -3,
            "completed": "yes",
            "track": {"id": "t1", "artist": "Nina", "genre": "jazz"},
        },
        "play_end",
    )
    assert row["user_id"] == "7"
    assert sorted(row["invalid"]) == ["artist", "completed", "genre", "seconds_listened"]
    assert (row["artist"], row["genre"], row["device"]) == (None, None, "2.5")
    assert len(row["screen"]) == 256
    assert row["track"] == "t1"
    assert row_of({"user_id": 1, "track": {"id": "t9", "artist": "Nina"}})["artist"] == "Nina"


@pytest.mark.parametrize("user", [True, None, {"id": 10}, "", 1.5])
def test_an_interaction_with_no_usable_user_is_a_dead_letter(user: Any) -> None:
    with pytest.raises(PermanentFailure, match="user_id"):
        row_of({"user_id": user})


# --- segments: published whole, written once ---


def lake_events(count: int, start: int = 0) -> list[Any]:
    """Interactions as the music class's pool hands them to its actor."""
    return [
        event(
            {
                "user_id": n % 3,
                "action": "skip_song",
                "timestamp": f"2025-10-27T14:{n % 60:02d}:00",
            },
            cls="music.interactions",
        )
        for n in range(start, start + count)
    ]


def stored(lake: str) -> list[str]:
    """Every event id in the lake, repeats included."""
    con = duckdb.connect()
    Lake(lake).register(con)
    return [event_id for (event_id,) in con.execute("SELECT event_id FROM interactions").fetchall()]


async def test_a_batch_taken_over_or_retried_writes_only_what_the_lake_lacks(
    tmp_path: Path,
) -> None:
    lake = str(tmp_path / "lake")
    archiver = LakeArchiver(lake=lake)
    events = lake_events(10)
    await archiver.handle_batch(events[:6], FakeContext())
    taken_over = FakeContext(taken_over={e.id for e in events})  # all 10, 6 already written
    await archiver.handle_batch(events, taken_over)
    retried = [e._replace(attempt=1) for e in events]
    await archiver.handle_batch(retried, FakeContext())
    ids = stored(lake)
    assert sorted(ids) == sorted(e.id for e in events)  # each once


async def test_without_a_take_over_nothing_is_looked_up_and_a_repeat_shows(tmp_path: Path) -> None:
    """The check costs a read of the partition, so it runs only for events another run may
    have handled: proof that the test above passes because of it."""
    lake = str(tmp_path / "lake")
    archiver = LakeArchiver(lake=lake)
    events = lake_events(3)
    await archiver.handle_batch(events, FakeContext())
    await archiver.handle_batch(events, FakeContext())
    assert len(stored(lake)) == 6


def test_a_segment_still_being_written_is_never_read(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    [segment] = lake.write([_lake_row("e1")])
    folder = Path(segment.path).parent
    (folder / f".half{SUFFIX}{TEMPORARY}").write_bytes(b"PAR1 not yet a whole file")
    assert stored(lake.url) == ["e1"]
    assert lake.segments() == [segment.path]


def _lake_row(event_id: str) -> dict[str, Any]:
    return row_of(BRIEF_EXAMPLE) | {"event_id": event_id}


# --- the service: HTTP in, lake and answers out ---


def music_yaml(
    redis_url: str,
    lake: str,
    *,
    port: int = 0,
    archiver: str = "actors.music:LakeArchiver",
    timeout: float = 30,
    more: str = "",
) -> str:
    """The default config's music part: the route, the class writing the lake, the analytics.
    `more`: more options of the archiver, `name: value` pairs."""
    options = f'lake: "{lake}", request_timeout_s: {timeout}' + (f", {more}" if more else "")
    return f"""
service: {{drain_timeout_s: 5, log_format: json}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: {port}}}
lanes: [{{name: low}}]
routes:
  - topic: music/+/events
    match:
      action: {{in: [like_song, skip_song, play_start, play_end]}}
      user_id: {{exists: true}}
    class: music.interactions
    key: user_id
classes:
  music.interactions:
    lane: low
    actor: "{archiver}"
    mode: batch
    batch: {{max_size: 1000, max_wait_ms: 200}}
    retry: {{max_attempts: 30, backoff_ms: 200, max_backoff_ms: 1000, jitter: 0}}
    options: {{{options}}}
analytics:
  music: {{provider: "actors.music.analytics:MusicAnalytics", options: {{lake: "{lake}"}}}}
"""


def music_config(redis_url: str, lake: str, **settings: Any) -> Config:
    return parse_config(music_yaml(redis_url, lake, **settings))


async def answer(http: aiohttp.ClientSession, service: Any, question: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{service.http_port}/analytics/music/{question}"
    async with http.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_the_briefs_example_event_is_counted_in_the_answers_and_bad_input_kept(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    lake = str(tmp_path / "lake")
    async with serve(music_config(redis_url, lake)) as service:
        url = events_url(service, "music/10/events")
        bad_time = {"user_id": 11, "action": "like_song", "timestamp": "27/10/2025 14h"}
        unknown = {"user_id": 12, "action": "rewind_song"}
        await post_json(http, url, [BRIEF_EXAMPLE, bad_time, unknown])
        await wait_for(lambda: len(stored(lake)) == 2, timeout=10)

        peak = await answer(
            http, service, "peak-times", user="10", since="2025-10-27", until="2025-10-28"
        )
        assert peak["rows"] == [["Mon", 14, 1, 1]]
        quality = await answer(http, service, "quality")
        assert ["timestamp: invalid", 1] in [row[:2] for row in quality["rows"]]
        assert await redis.xlen(keys.unrouted()) == 1  # the unknown action, kept and counted
        async with http.get(f"http://127.0.0.1:{service.http_port}/readyz") as ready:
            assert ready.status == 200


async def test_bad_analytics_requests_get_a_clear_error(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serve(music_config(redis_url, str(tmp_path / "lake"))) as service:
        base = f"http://127.0.0.1:{service.http_port}/analytics"
        for path, status, said in (
            ("/music/nothing", 404, "no question"),
            ("/sports/artists", 404, "no analytics for 'sports'"),
            ("/music/artists?tz=Mars/Olympus", 400, "time zone"),
            ("/music/artists?since=yesterday", 400, "ISO date"),
            ("/music/artists?since=2025-10-28&until=2025-10-27", 400, "before"),
        ):
            async with http.get(base + path) as response:
                assert response.status == status, path
                assert said in (await response.json())["error"], path
        async with http.get(base) as listing:
            assert "peak-times" in (await listing.json())["music"]


async def test_a_lake_that_cannot_be_read_is_a_503_that_says_why_and_the_service_stays_up(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    damaged = lake / "date=2025-10-27" / "hour=14" / "copied-by-hand.parquet"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not parquet at all")
    async with serve(music_config(redis_url, str(lake))) as service:
        base = f"http://127.0.0.1:{service.http_port}"
        async with http.get(f"{base}/analytics/music/artists") as response:
            assert response.status == 503
            said = (await response.json())["error"]
        assert said.startswith("music could not answer:")
        assert "copied-by-hand" in said
        async with http.get(f"{base}/readyz") as ready:
            assert ready.status == 200


# --- an object store: a real S3-compatible server, gone and back ---


async def post_json(http: aiohttp.ClientSession, url: str, body: Any) -> None:
    async with http.post(url, json=body) as response:
        assert response.status == 202, await response.text()


async def post_interactions(http: aiohttp.ClientSession, url: str, start: int, count: int) -> None:
    batch = [
        {"user_id": n % 7, "action": "play_end", "timestamp": f"2025-10-27T14:{n % 60:02d}:00",
         "seconds_listened": 180, "completed": True, "artist": f"a{n % 5}"}
        for n in range(start, start + count)
    ]  # fmt: skip
    await post_json(http, url, batch)


async def test_the_lake_in_an_object_store_rides_out_an_outage_without_a_loss_or_a_repeat(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, s3: S3Server
) -> None:
    lake = "s3://lake/music"
    async with serve(music_config(redis_url, lake, timeout=1)) as service:
        url = events_url(service, "music/1/events")
        await post_interactions(http, url, 0, 40)
        await wait_for(lambda: len(stored(lake)) == 40, timeout=15)
        s3.pause()  # gone: requests hang until the client's timeout
        try:
            await post_interactions(http, url, 40, 40)  # still accepted: Redis holds them
            await wait_for(
                lambda: processed(service, "music.interactions", "retried") >= 1, timeout=20
            )
        finally:
            s3.resume()
        await wait_for(lambda: len(stored(lake)) >= 80, timeout=30)
        ids = stored(lake)
        assert len(ids) == len(set(ids)) == 80
        streamed = await answer(http, service, "provided-vs-streamed")
        everyone = dict(zip(streamed["columns"], streamed["rows"][0], strict=True))
        assert everyone["play_ends"] == 80  # each row once


# --- a crash between a segment's publication and its ack ---


@pytest.mark.timeout(90)
async def test_a_sigkill_after_a_segment_was_published_and_before_its_ack_loses_and_doubles_nothing(
    redis_url: str, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    lake, marker = str(tmp_path / "lake"), tmp_path / "crashed"
    port = free_port()
    path = tmp_path / "switchyard.yaml"
    crashing = "actors_for_tests:CrashingArchiver"
    path.write_text(
        music_yaml(redis_url, lake, port=port, archiver=crashing, more=f'marker: "{marker}"')
    )
    service = ServiceProcess(path, cwd=Path(__file__).parent)
    try:
        await service.start()
        await wait_for(lambda: service.logged("http ingress listening"), timeout=20)
        await post_interactions(http, f"http://127.0.0.1:{port}/events/music/1/events", 0, 30)
        await wait_for(lambda: service.returncode is not None, timeout=20)  # it killed itself
        assert marker.exists()
        published_before_ack = len(stored(lake))
        assert published_before_ack > 0
        await service.start()  # the same service comes back and takes the batch over
        try:
            await wait_for(lambda: len(stored(lake)) >= 30 and pending_is_zero(redis), timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{service.tail(40)}") from None
        ids = stored(lake)
        assert len(ids) == len(set(ids)) == 30
    finally:
        await service.close()


async def pending_is_zero(redis: Redis) -> bool:
    summary: Any = await redis.xpending(keys.stream("music.interactions"), GROUP)
    return int(summary["pending"]) == 0


# --- the page, in a real browser ---


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (.ci/run installs it)")
async def test_the_analytics_page_draws_the_heatmap_and_bars_in_a_real_browser(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    lake = str(tmp_path / "lake")
    async with serve(music_config(redis_url, lake)) as service:
        url = events_url(service, "music/1/events")
        await post_interactions(http, url, 0, 30)
        await wait_for(lambda: len(stored(lake)) == 30, timeout=15)
        page = f"http://127.0.0.1:{service.http_port}/analytics/music"
        screenshot = tmp_path / "analytics.png"
        dom, _ = await asyncio.gather(
            browse("--dump-dom", page), browse(f"--screenshot={screenshot}", page)
        )
    assert 'data-state="ready"' in dom  # every answer came back and was drawn
    assert 'class="chart heatmap"' in dom
    assert dom.count('class="chart bars"') >= 4
    assert 'data-state="failed"' not in dom
    assert screenshot.stat().st_size > 20_000  # a page with charts, not a blank one


async def browse(action: str, url: str) -> str:
    """Headless chromium on `url`: its DOM after the scripts ran, or a screenshot."""
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1300,1400",
        "--virtual-time-budget=10000", action, url,
    ]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
