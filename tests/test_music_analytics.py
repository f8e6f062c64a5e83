"""MusicAnalytics over small hand-made lakes whose answers are known exactly: the score
weights, the user and time filters, time zones, shares, rates, percentiles and data quality.

Fast: no servers, one lake per test in `tmp_path`, DuckDB in memory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import count
from typing import TYPE_CHECKING, Any

import pytest

from actors.api import Query, QueryError
from actors.music.analytics import TOP, MusicAnalytics
from actors.music.lake import Lake
from actors.music.schema import TS_INVALID, TS_MISSING, TS_SOURCE

if TYPE_CHECKING:
    from pathlib import Path

MONDAY = datetime(2025, 10, 27, 14, 3, tzinfo=UTC)  # the brief's example: 14:03 UTC, a Monday
QUESTIONS = [
    "artists", "genres", "peak-times", "devices", "platforms", "app-versions", "activity",
    "provided-vs-streamed", "quality",
]  # fmt: skip
_ids = count()


def interaction(user: str, action: str, ts: datetime = MONDAY, /, **fields: Any) -> dict[str, Any]:
    """One lake row, as the ingest writes it; unset fields are null."""
    return {
        "event_id": f"ev-{next(_ids)}",
        "user_id": user,
        "action": action,
        "ts": ts,
        "ts_status": TS_SOURCE,
        "ingest_ts": ts,
        "invalid": [],
    } | fields


def analytics_over(tmp_path: Path, rows: list[dict[str, Any]]) -> MusicAnalytics:
    lake = str(tmp_path / "lake")
    if rows:
        Lake(lake).write(rows)
    return MusicAnalytics(lake=lake)


def rows_of(analytics: MusicAnalytics, question: str, **query: Any) -> list[list[Any]]:
    return analytics.answer(question, Query(**query)).rows


def column(analytics: MusicAnalytics, question: str, name: str, **query: Any) -> list[Any]:
    answer = analytics.answer(question, Query(**query))
    index = answer.columns.index(name)
    return [row[index] for row in answer.rows]


def test_the_questions_are_listed_in_order_each_with_a_line() -> None:
    questions = MusicAnalytics(lake="unused").questions()
    assert list(questions) == QUESTIONS
    assert all(line and "\n" not in line for line in questions.values())


# --- favourites ---


def favourite_rows() -> list[dict[str, Any]]:
    a = {"artist": "Ada", "genre": "jazz"}
    b = {"artist": "Bo", "genre": "rock"}
    c = {"artist": "Cy", "genre": "jazz"}
    return [
        interaction("u1", "like_song", **a),
        interaction("u2", "like_song", **a),
        interaction("u1", "add_to_playlist", **a),
        interaction("u1", "play_end", completed=True, seconds_listened=200.0, **a),
        interaction("u2", "play_end", completed=True, seconds_listened=210.0, **a),
        interaction("u2", "play_end", completed=False, seconds_listened=20.0, **a),  # scores 0
        interaction("u2", "play_start", **a),  # not scored
        interaction("u1", "skip_song", **a),
        interaction("u1", "remove_from_playlist", **a),
        interaction("u2", "like_song", **b),
        interaction("u2", "skip_song", **b),
        interaction("u2", "skip_song", **b),
        interaction("u2", "skip_song", **b),
        interaction("u3", "add_to_playlist", **c),
        interaction("u3", "like_song", track="t-1"),  # no artist, no genre: left out
    ]


def test_artist_scores_follow_the_documented_weights(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, favourite_rows())
    answer = analytics.answer("artists", Query())
    assert answer.columns[:3] == ["artist", "score", "likes"]
    # Ada: 2 likes x3 + 1 add x2 + 2 full plays x1 - 1 skip - 1 removal x2 = 7
    assert answer.rows == [["Ada", 7, 2, 1, 2, 1], ["Cy", 2, 0, 1, 0, 0], ["Bo", 0, 1, 0, 0, 3]]
    assert (answer.chart.kind, answer.chart.x, answer.chart.value) == ("bars", "artist", "score")
    assert "like +3" in answer.note
    assert "remove from a playlist -2" in answer.note


def test_genre_scores_add_up_their_artists(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, favourite_rows())
    assert rows_of(analytics, "genres") == [["jazz", 9, 2, 2, 2, 1], ["rock", 0, 1, 0, 0, 3]]


def test_one_users_favourites_count_only_their_actions(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, favourite_rows())
    # u2 on Ada: like +3, full play +1; on Bo: like +3, three skips -3
    assert rows_of(analytics, "artists", user="u2") == [
        ["Ada", 4, 1, 0, 1, 0],
        ["Bo", 0, 1, 0, 0, 3],
    ]


def test_only_the_top_artists_are_listed_best_first(tmp_path: Path) -> None:
    rows = [
        interaction("u1", "like_song", artist=f"artist-{n:02d}")
        for n in range(TOP + 3)
        for _ in range(n + 1)
    ]
    analytics = analytics_over(tmp_path, rows)
    expected = [f"artist-{n:02d}" for n in range(TOP + 2, 2, -1)]
    assert column(analytics, "artists", "artist") == expected


# --- time: bounds and zones ---


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (datetime(2025, 10, 27, tzinfo=UTC), datetime(2025, 10, 28, tzinfo=UTC)),  # folders
        (datetime(2025, 10, 27, 14, tzinfo=UTC), datetime(2025, 10, 27, 15, tzinfo=UTC)),
    ],
    ids=["across-date-folders", "within-one-folder"],
)
def test_since_is_inclusive_and_until_exclusive(
    tmp_path: Path, since: datetime, until: datetime
) -> None:
    tick = timedelta(microseconds=1)
    moments = [since - tick, since, until - tick, until]
    analytics = analytics_over(tmp_path, [interaction("u1", "play_start", ts) for ts in moments])
    assert column(analytics, "devices", "events", since=since, until=until) == [2]
    assert column(analytics, "devices", "events", since=since) == [3]
    assert column(analytics, "devices", "events", until=until) == [3]


def test_bounds_in_another_zone_select_by_the_utc_folders(tmp_path: Path) -> None:
    """01:00 on the 27th in UTC+2 is 23:00 on the 26th in UTC: that folder must be read."""
    plus_two = timezone(timedelta(hours=2))
    late_on_the_26th = datetime(2025, 10, 26, 23, 30, tzinfo=UTC)
    analytics = analytics_over(tmp_path, [interaction("u1", "play_start", late_on_the_26th)])
    since = datetime(2025, 10, 27, 1, 0, tzinfo=plus_two)
    until = datetime(2025, 10, 27, 2, 0, tzinfo=plus_two)
    assert column(analytics, "devices", "events", since=since, until=until) == [1]


def test_the_briefs_example_counts_in_peak_times_for_user_10(tmp_path: Path) -> None:
    # {'user_id': 10, 'action': 'skip_song', 'timestamp': '2025-10-27T14:03:00'}
    example = interaction("10", "skip_song", MONDAY)
    analytics = analytics_over(tmp_path, [example, interaction("11", "play_start", MONDAY)])
    answer = analytics.answer("peak-times", Query(user="10"))
    assert answer.columns == ["weekday", "hour", "events", "active_users"]
    assert answer.rows == [["Mon", 14, 1, 1]]
    assert (answer.chart.kind, answer.chart.x, answer.chart.y) == ("heatmap", "hour", "weekday")


def test_peak_times_read_the_clock_of_the_asked_zone(tmp_path: Path) -> None:
    rows = [
        interaction("u1", "play_start", MONDAY),  # 10:03 EDT
        interaction("u2", "play_start", MONDAY + timedelta(minutes=30)),  # 10:33 EDT
        interaction("u2", "play_end", MONDAY + timedelta(minutes=31)),
        interaction("u1", "play_start", datetime(2025, 10, 27, 2, 0, tzinfo=UTC)),  # Sun 22:00
        interaction("u1", "play_start", datetime(2025, 11, 3, 14, 3, tzinfo=UTC)),  # 09:03 EST
    ]
    analytics = analytics_over(tmp_path, rows)
    assert rows_of(analytics, "peak-times", tz="America/New_York") == [
        ["Mon", 9, 1, 1],  # after the clocks went back on 2 November
        ["Mon", 10, 3, 2],
        ["Sun", 22, 1, 1],
    ]
    assert rows_of(analytics, "peak-times") == [
        ["Mon", 2, 1, 1],
        ["Mon", 14, 4, 2],
    ]


def test_peak_times_in_a_half_hour_zone_split_utc_hours(tmp_path: Path) -> None:
    """India is UTC+5:30: 14:29 UTC is 19:59 there, 14:31 UTC is 20:01."""
    rows = [
        interaction("u1", "play_start", datetime(2025, 10, 27, 14, 29, tzinfo=UTC)),
        interaction("u1", "play_end", datetime(2025, 10, 27, 14, 31, tzinfo=UTC)),
    ]
    analytics = analytics_over(tmp_path, rows)
    assert rows_of(analytics, "peak-times", tz="Asia/Kolkata") == [
        ["Mon", 19, 1, 1],
        ["Mon", 20, 1, 1],
    ]


# --- where: shares, versions ---


def device_rows() -> list[dict[str, Any]]:
    phone = {"device": "iphone", "platform": "ios"}
    web = {"device": "web-browser", "platform": "web"}
    return [
        *(interaction("u1", "play_start", **phone) for _ in range(3)),
        interaction("u2", "play_start", **web),
        interaction("u3", "play_start", **phone),
    ]


def test_device_shares_of_users_and_events(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, device_rows())
    answer = analytics.answer("devices", Query())
    assert answer.columns == ["device", "users", "user_share", "events", "event_share"]
    assert answer.rows == [
        ["iphone", 2, pytest.approx(2 / 3), 4, pytest.approx(0.8)],
        ["web-browser", 1, pytest.approx(1 / 3), 1, pytest.approx(0.2)],
    ]
    for share in ("user_share", "event_share"):
        assert sum(column(analytics, "platforms", share)) == pytest.approx(1.0)


def test_a_user_on_two_devices_counts_on_both(tmp_path: Path) -> None:
    rows = [*device_rows(), interaction("u2", "play_start", device="iphone")]
    analytics = analytics_over(tmp_path, rows)
    assert column(analytics, "devices", "users") == [3, 1]
    assert sum(column(analytics, "devices", "event_share")) == pytest.approx(1.0)


def test_app_versions_skip_rate_and_listening_hours(tmp_path: Path) -> None:
    old, new = {"app_version": "1.0"}, {"app_version": "2.0"}
    rows = [
        interaction("u1", "skip_song", **old),
        *(
            interaction("u1", "play_end", seconds_listened=s, completed=True, **old)
            for s in (60.0, 120.0, 180.0)
        ),
        interaction("u2", "like_song", **new),
    ]
    analytics = analytics_over(tmp_path, rows)
    answer = analytics.answer("app-versions", Query())
    assert answer.columns[-2:] == ["skip_rate", "listening_hours"]
    assert answer.rows == [
        ["1.0", 1, 0.5, 4, 0.8, pytest.approx(0.25), pytest.approx(0.1)],
        ["2.0", 1, 0.5, 1, 0.2, None, 0.0],  # no plays, no skips: no rate
    ]


# --- how much ---


def activity_rows() -> list[dict[str, Any]]:
    """User `u{k}` does k things, for k = 1..10: 55 events."""
    return [interaction(f"u{k}", "play_start") for k in range(1, 11) for _ in range(k)]


def test_activity_percentiles_and_the_heavy_users_share(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, activity_rows())
    answer = analytics.answer("activity", Query())
    assert answer.columns == ["measure", "value"]
    assert dict(answer.rows) == {
        "active users": 10,
        "events": 55,
        "events per user, p50": 5,
        "events per user, p90": 9,
        "events per user, p99": 10,
        "events per user, max": 10,
        "share of events from the top 10% of users": pytest.approx(10 / 55),
    }


def test_activity_for_one_user_gives_their_count_and_rank(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, activity_rows())
    rows = rows_of(analytics, "activity", user="u3")
    assert rows[:2] == [
        ["events of this user", 3],
        ["rank: share of the other users with fewer events", pytest.approx(2 / 9)],
    ]
    assert ["active users", 10] in rows  # everyone's figures follow, for context
    assert rows_of(analytics, "activity", user="nobody") == []


def test_provided_vs_streamed_for_everyone_and_for_one_user(tmp_path: Path) -> None:
    rows = [
        interaction("a", "like_song"),
        interaction("a", "like_song"),
        interaction("a", "skip_song"),
        interaction("a", "play_start"),
        interaction("a", "play_start"),
        interaction("a", "play_end", seconds_listened=1800.0, completed=True),
        interaction("b", "select_channel"),
    ]
    analytics = analytics_over(tmp_path, rows)
    everyone = rows_of(analytics, "provided-vs-streamed")
    assert everyone[0] == ["everyone", 2, 4, 2, 1, pytest.approx(0.5), pytest.approx(2.0)]
    # per-user p50 (nearest rank of two users: the lower one); b has no play, so no ratio
    assert everyone[1] == ["per user, p50", 2, 1, 0, 0, 0.0, pytest.approx(1.5)]
    assert [row[0] for row in everyone[2:]] == ["per user, p90", "per user, p99"]
    assert rows_of(analytics, "provided-vs-streamed", user="a") == [
        ["a", 1, 3, 2, 1, pytest.approx(0.5), pytest.approx(1.5)],
    ]


# --- data quality ---


def test_quality_counts_unusable_values_and_timestamps_once(tmp_path: Path) -> None:
    rows = [
        interaction("u1", "play_start", invalid=["device"]),
        interaction("u1", "play_start", invalid=["device", "app_version"]),
        interaction("u1", "play_start", ts_status=TS_MISSING),
        *(
            interaction("u1", "play_start", ts_status=TS_INVALID, invalid=["timestamp"])
            for _ in range(2)
        ),
        interaction("u1", "play_start"),
        interaction("u2", "play_start", invalid=["completed"]),
        interaction("u2", "play_start"),
    ]
    analytics = analytics_over(tmp_path, rows)
    assert rows_of(analytics, "quality", user="u1") == [
        ["device", 2, pytest.approx(2 / 6)],
        ["timestamp: invalid", 2, pytest.approx(2 / 6)],
        ["app_version", 1, pytest.approx(1 / 6)],
        ["timestamp: missing", 1, pytest.approx(1 / 6)],
    ]
    assert ["completed", 1, pytest.approx(1 / 8)] in rows_of(analytics, "quality")


# --- refusals and emptiness ---


def test_an_unknown_question_is_a_query_error(tmp_path: Path) -> None:
    with pytest.raises(QueryError, match="unknown question"):
        analytics_over(tmp_path, []).answer("favourite-colour", Query())


def test_a_time_zone_duckdb_does_not_know_is_a_query_error(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, device_rows())
    with pytest.raises(QueryError, match="time zone"):
        analytics.answer("peak-times", Query(tz="Mars/Olympus_Mons"))


def test_bounds_without_a_zone_or_in_the_wrong_order_are_query_errors(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, device_rows())
    with pytest.raises(QueryError, match="time zone"):
        analytics.answer("devices", Query(since=datetime(2025, 10, 27)))
    with pytest.raises(QueryError, match="before"):
        analytics.answer("devices", Query(since=MONDAY, until=MONDAY))


@pytest.mark.parametrize("question", QUESTIONS)
def test_an_empty_lake_answers_with_no_rows(tmp_path: Path, question: str) -> None:
    answer = analytics_over(tmp_path, []).answer(question, Query(user="10", tz="Europe/Paris"))
    assert answer.rows == []
    assert answer.columns  # the table still says what it would hold
    assert analytics_over(tmp_path, []).answer(question, Query()).rows == []


@pytest.mark.parametrize("question", QUESTIONS)
def test_an_empty_range_answers_with_no_rows(tmp_path: Path, question: str) -> None:
    analytics = analytics_over(tmp_path, [*favourite_rows(), *device_rows()])
    since = datetime(2030, 1, 1, tzinfo=UTC)
    assert analytics.answer(question, Query(since=since)).rows == []


def test_the_user_travels_as_a_parameter_never_as_sql(tmp_path: Path) -> None:
    analytics = analytics_over(tmp_path, device_rows())
    sneaky = "u1' OR '1'='1"
    plan = analytics.plan("devices", Query(user=sneaky))
    assert sneaky not in plan.sql
    assert plan.params == {"user": sneaky}
    assert rows_of(analytics, "devices", user=sneaky) == []
