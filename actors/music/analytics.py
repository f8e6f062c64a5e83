"""The music workload's analytics: questions over the lake, answered by DuckDB.

Each answer opens its own in-memory DuckDB: answers run in worker threads at once, a DuckDB
connection must not serve two threads, and a new one with the lake's view costs ~25 ms
against the hundreds a question over millions of rows takes. Every question is one SQL
statement that starts from `scoped`, the rows of one user or of everyone in [since, until).
Besides the exact `ts` bounds, `scoped` bounds the `date` partition column, so DuckDB opens
only the folders in range. Rows whose source sent no usable time carry their ingest time in
`ts` (see `ts_status`) and are placed by it. User input only ever travels as bound
parameters. `plan()` gives the SQL and its parameters, so the benchmark can time DuckDB on the
same statement without this module around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb

from actors.api import Answer, Chart, Query, QueryError
from actors.music.lake import Lake
from actors.music.schema import EXPLICIT_ACTIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

TOP = 10  # artists and genres listed
HEAVY_USERS = 0.1  # activity: the share of users, the most active first, counted as heavy
PERCENTILES = (0.5, 0.9, 0.99)
# A favourite's score: what each action says about liking the artist or genre. `play_end`
# scores only when the track played to the end.
WEIGHTS = {
    "like_song": 3, "add_to_playlist": 2, "play_end": 1, "skip_song": -1,
    "remove_from_playlist": -2,
}  # fmt: skip
SCORED = {
    "like_song": "like", "add_to_playlist": "add to a playlist",
    "play_end": "a play to the end", "skip_song": "skip",
    "remove_from_playlist": "remove from a playlist",
}  # fmt: skip
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
CELLS = 7 * 24  # peak times: weekday x hour
SLOT_US = 15 * 60 * 1_000_000  # peak times: the zone's offset is read once per quarter hour
PARAMETER = re.compile(r"\$(\w+)")

Rows = list[list[Any]]


@dataclass(frozen=True, slots=True)
class Plan:
    """One question's SQL over the `interactions` view, and the parameters it names; run it
    with DuckDB's TimeZone set to UTC, as `answer` does."""

    sql: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Question:
    summary: str
    title: str
    columns: list[str]
    chart: Chart
    note: str
    body: Callable[[Query], str]  # the SQL after the `scoped` CTE: `, more AS (...) SELECT ...`
    shape: Callable[[Sequence[str], list[tuple[Any, ...]], Query], Rows] | None = None
    everyone_in_scope: bool = False  # the user is placed among all users, not filtered out


class MusicAnalytics:
    """Questions about what users play and do, over the music lake at `lake` (a path or an
    s3:// URL)."""

    def __init__(self, *, lake: str, **options: Any) -> None:
        self.lake = lake
        self.options = options  # what else the config says; nothing more is needed yet
        # One Lake for every answer: it remembers what each compacted segment replaces (an
        # immutable file's footer), so a question does not read every footer again.
        self._lake = Lake(lake)

    def questions(self) -> dict[str, str]:
        return {name: question.summary for name, question in QUESTIONS.items()}

    def plan(self, question: str, query: Query) -> Plan:
        """The SQL `answer` runs for `question`, over a view named `interactions`."""
        asked = _question(question)
        _check_range(query)
        scope, params = _scope(query, filter_user=not asked.everyone_in_scope)
        sql = f"{scope}\n{asked.body(query)}"
        params |= {"user": query.user, "tz": query.tz}
        named = set(PARAMETER.findall(sql))
        return Plan(sql, {name: value for name, value in params.items() if name in named})

    def answer(self, question: str, query: Query) -> Answer:
        asked = _question(question)
        plan = self.plan(question, query)
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")  # casts of TIMESTAMPTZ never follow the host's
            _check_zone(con, query.tz)
            self._lake.register(con)
            cursor = con.execute(plan.sql, plan.params)
            names = [column[0] for column in cursor.description or []]
            found = cursor.fetchall()
        rows = asked.shape(names, found, query) if asked.shape else [list(r) for r in found]
        return Answer(
            question=question,
            title=_title(asked.title, query),
            columns=list(asked.columns),
            rows=rows,
            chart=asked.chart,
            note=asked.note,
        )


# --- scope and checks ---


def _question(name: str) -> _Question:
    try:
        return QUESTIONS[name]
    except KeyError:
        raise QueryError(f"unknown question {name!r}; ask one of {', '.join(QUESTIONS)}") from None


def _check_range(query: Query) -> None:
    """Naive times would be read in DuckDB's session zone: refuse them rather than guess."""
    for name, moment in (("since", query.since), ("until", query.until)):
        if moment is not None and moment.utcoffset() is None:
            raise QueryError(f"{name} must carry a time zone")
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise QueryError("since must be before until")


def _check_zone(con: duckdb.DuckDBPyConnection, zone: str) -> None:
    try:
        probe = "SELECT timezone($tz, TIMESTAMPTZ '2025-01-01 00:00:00+00')"
        con.execute(probe, {"tz": zone}).fetchall()
    except duckdb.Error:
        raise QueryError(f"unknown time zone {zone!r} (say UTC, Europe/Paris, ...)") from None


def _scope(query: Query, *, filter_user: bool) -> tuple[str, dict[str, Any]]:
    """The `scoped` CTE and its parameters. A row's `date` folder is the UTC date of its `ts`,
    so the bounds on `date` are exact, and DuckDB skips the folders outside them."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if query.since is not None:
        conditions += ["ts >= $since", "date >= $since_date"]
        params |= {"since": query.since, "since_date": _utc_date(query.since)}
    if query.until is not None:
        last = query.until - timedelta(microseconds=1)  # until is exclusive
        conditions += ["ts < $until", "date <= $until_date"]
        params |= {"until": query.until, "until_date": _utc_date(last)}
    if query.user is not None and filter_user:
        conditions.append("user_id = $user")
    where = " AND ".join(conditions) or "true"
    return f"WITH scoped AS NOT MATERIALIZED (SELECT * FROM interactions WHERE {where})", params


def _utc_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _title(base: str, query: Query) -> str:
    parts = [f"user {query.user}" if query.user is not None else "everyone"]
    if query.since is not None:
        parts.append(f"from {query.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
    if query.until is not None:
        parts.append(f"until {query.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
    return f"{base} ({', '.join(parts)})"


def _sql_list(values: Sequence[str]) -> str:
    """Our own constants (never user input) as a SQL list of text literals."""
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


# --- favourites: artists, genres ---


def _favourites(column: str) -> Callable[[Query], str]:
    weight = " ".join(f"WHEN '{action}' THEN {points}" for action, points in WEIGHTS.items())

    def body(query: Query) -> str:
        return f"""
SELECT {column},
       sum(CASE action {weight} END)::BIGINT AS score,
       count(*) FILTER (action = 'like_song') AS likes,
       count(*) FILTER (action = 'add_to_playlist') AS playlist_adds,
       count(*) FILTER (action = 'play_end') AS completed_plays,
       count(*) FILTER (action = 'skip_song') AS skips
FROM scoped
WHERE {column} IS NOT NULL
  AND action IN ({_sql_list(list(WEIGHTS))})
  AND (action <> 'play_end' OR completed)
GROUP BY {column}
ORDER BY score DESC, {column}
LIMIT {TOP}"""

    return body


def _favourites_note(what: str) -> str:
    weights = ", ".join(f"{SCORED[action]} {points:+d}" for action, points in WEIGHTS.items())
    return f"Score per {what}: {weights}; the top {TOP}, rows with no {what} left out."


# --- when: peak times ---


def _peak_times(query: Query) -> str:
    """Events and distinct users per local (weekday, hour) cell, fast on millions of rows.

    The zone's clock is read once per 15-minute slot of UTC time in range, not once per row
    (ICU per row costs about as much as the rest of the query): every zone's offsets and
    transitions since 1972 fall on quarter hours, so a slot lies in one local cell. The slots
    span the `date` folders in scope, which DuckDB lists faster than it finds min/max of `ts`.
    Distinct users per cell: one bit string of cells per user, then each bit's users counted.
    At 10M rows this takes half the time of `count(DISTINCT user_id)` per cell; aggregating
    per (user, weekday, hour) first is slower still, since nearly every event of a user falls
    in a cell of its own (6.6M groups for 10M rows over a month).
    """
    return f"""
, days AS (SELECT date FROM scoped GROUP BY date)
, bounds AS (
    SELECT epoch_us(min(date)::DATE::TIMESTAMPTZ) // {SLOT_US} AS first,
           epoch_us((max(date)::DATE + 1)::TIMESTAMPTZ) // {SLOT_US} - 1 AS last
    FROM days
), slots AS (
    SELECT slot, timezone($tz, make_timestamptz(slot * {SLOT_US})) AS local
    FROM bounds, range(first, last + 1) AS r(slot)
), cells AS (
    SELECT slot, ((isodow(local) - 1) * 24 + hour(local))::INTEGER AS cell FROM slots
), placed AS MATERIALIZED (
    SELECT user_id, cell FROM scoped JOIN cells ON epoch_us(scoped.ts) // {SLOT_US} = cells.slot
), per_user AS (
    SELECT bitstring_agg(cell, 0, {CELLS - 1}) AS cells FROM placed GROUP BY user_id
), active AS (
    SELECT cell, count(*) AS active_users
    FROM per_user, range({CELLS}) AS r(cell)
    WHERE get_bit(cells, cell::INTEGER) = 1
    GROUP BY cell
), events AS (
    SELECT cell, count(*) AS events FROM placed GROUP BY cell
)
SELECT [{_sql_list(WEEKDAYS)}][cell // 24 + 1] AS weekday, (cell % 24)::INTEGER AS hour,
       events, active_users
FROM events JOIN active USING (cell)
ORDER BY cell"""


# --- where: devices, platforms, app versions ---


def _shares(column: str, *, listening: bool = False) -> Callable[[Query], str]:
    """Per `column` value: its users and events, each as a share of the total. A user seen
    on two devices counts on both, so user shares may add up to more than 1."""
    extra_per_user = (
        ", count(*) FILTER (action = 'skip_song') AS skips"
        ", count(*) FILTER (action = 'play_end') AS play_ends"
        ", sum(seconds_listened) FILTER (action = 'play_end') AS seconds"
        if listening
        else ""
    )
    extra_columns = (
        ", sum(skips) / nullif(sum(skips) + sum(play_ends), 0) AS skip_rate"
        ", coalesce(sum(seconds), 0) / 3600 AS listening_hours"
        if listening
        else ""
    )

    def body(query: Query) -> str:
        return f"""
, per_user AS MATERIALIZED (
    SELECT {column}, user_id, count(*) AS events{extra_per_user}
    FROM scoped GROUP BY ALL
), totals AS MATERIALIZED (
    SELECT count(DISTINCT user_id) AS all_users, sum(events) AS all_events FROM per_user
)
SELECT {column}, count(*) AS users, count(*) / any_value(all_users) AS user_share,
       sum(events)::BIGINT AS events, sum(events) / any_value(all_events) AS event_share
       {extra_columns}
FROM per_user, totals
GROUP BY {column}
ORDER BY events DESC, {column} NULLS LAST"""

    return body


# --- how much: activity, provided vs streamed ---


def _activity(query: Query) -> str:
    """Events per user over everyone in range; for one user, also where they stand."""
    mine = (
        ", any_value(events) FILTER (user_id = $user) AS user_events"
        ", any_value(standing) FILTER (user_id = $user) AS user_rank"
        if query.user is not None
        else ""
    )
    quantiles = ", ".join(f"quantile_disc(events, {q}) AS p{round(q * 100)}" for q in PERCENTILES)
    return f"""
, per_user AS (SELECT user_id, count(*) AS events FROM scoped GROUP BY user_id)
, ranked AS (
    SELECT user_id, events,
           row_number() OVER (ORDER BY events DESC) AS place,
           count(*) OVER () AS users,
           percent_rank() OVER (ORDER BY events) AS standing
    FROM per_user
)
SELECT count(*) AS users, sum(events)::BIGINT AS events, {quantiles}, max(events) AS max,
       sum(events) FILTER (place <= ceil(users * {HEAVY_USERS})) / sum(events) AS heavy_share
       {mine}
FROM ranked"""


ACTIVITY_LABELS = {
    "user_events": "events of this user",
    "user_rank": "rank: share of the other users with fewer events",
    "users": "active users",
    "events": "events",
    **{f"p{round(q * 100)}": f"events per user, p{round(q * 100)}" for q in PERCENTILES},
    "max": "events per user, max",
    "heavy_share": f"share of events from the top {HEAVY_USERS:.0%} of users",
}


def _activity_rows(names: Sequence[str], found: list[tuple[Any, ...]], query: Query) -> Rows:
    """The one wide row as (measure, value) rows, the user's own first; none when nobody,
    or not the user asked about, did anything in range."""
    values = dict(zip(names, found[0], strict=True)) if found else {}
    if not values.get("users") or (query.user is not None and values.get("user_events") is None):
        return []
    order = sorted(values, key=lambda name: not name.startswith("user_"))
    return [[ACTIVITY_LABELS[name], values[name]] for name in order]


def _provided_vs_streamed(query: Query) -> str:
    """Explicit actions against plays: one user's row, or everyone's totals followed by the
    per-user percentiles of each column (each column on its own)."""
    per_user = f"""
, per_user AS MATERIALIZED (
    SELECT user_id,
           count(*) FILTER (action IN ({_sql_list(EXPLICIT_ACTIONS)})) AS explicit_actions,
           count(*) FILTER (action = 'play_start') AS play_starts,
           count(*) FILTER (action = 'play_end') AS play_ends,
           coalesce(sum(seconds_listened) FILTER (action = 'play_end'), 0) / 3600
               AS listening_hours
    FROM scoped GROUP BY user_id
)"""
    if query.user is not None:
        return f"""{per_user}
SELECT user_id AS scope, 1 AS users, explicit_actions, play_starts, play_ends,
       listening_hours, explicit_actions / nullif(play_starts, 0) AS explicit_per_play
FROM per_user"""
    percentiles = "\nUNION ALL\n".join(
        f"""SELECT 'per user, p{round(q * 100)}', {order}, count(*),
       quantile_disc(explicit_actions, {q}), quantile_disc(play_starts, {q}),
       quantile_disc(play_ends, {q}), quantile_disc(listening_hours, {q}),
       quantile_disc(explicit_actions / nullif(play_starts, 0), {q})
FROM per_user HAVING count(*) > 0"""
        for order, q in enumerate(PERCENTILES, start=1)
    )
    return f"""{per_user}
SELECT scope, users, explicit_actions, play_starts, play_ends, listening_hours,
       explicit_per_play
FROM (
SELECT 'everyone' AS scope, 0 AS ordinal, count(*) AS users,
       sum(explicit_actions)::BIGINT AS explicit_actions, sum(play_starts)::BIGINT AS play_starts,
       sum(play_ends)::BIGINT AS play_ends, sum(listening_hours) AS listening_hours,
       sum(explicit_actions) / nullif(sum(play_starts), 0) AS explicit_per_play
FROM per_user HAVING count(*) > 0
UNION ALL
{percentiles}
)
ORDER BY ordinal"""


# --- data quality ---


def _quality(query: Query) -> str:
    """Unusable values per field, from `invalid`; timestamps instead by `ts_status`, which
    also tells a missing one from an unreadable one (the writer names an unreadable one
    `timestamp` in `invalid` as well: left out here, so it is not counted twice)."""
    return """
, flagged AS MATERIALIZED (
    SELECT ts_status, invalid FROM scoped WHERE len(invalid) > 0 OR ts_status <> 'source'
), total AS MATERIALIZED (SELECT count(*) AS rows FROM scoped)
SELECT field, count(*) AS invalid_values, count(*) / any_value(total.rows) AS share_of_rows
FROM (SELECT unnest(invalid) AS field FROM flagged), total
WHERE field <> 'timestamp'
GROUP BY field
UNION ALL
SELECT 'timestamp: ' || ts_status, count(*), count(*) / any_value(total.rows)
FROM flagged, total
WHERE ts_status <> 'source'
GROUP BY ts_status
ORDER BY invalid_values DESC, field"""


FAVOURITE_COLUMNS = ["score", "likes", "playlist_adds", "completed_plays", "skips"]
SHARE_COLUMNS = ["users", "user_share", "events", "event_share"]
SHARE_NOTE = (
    "Shares are fractions of the users active in range and of their events; a user seen on "
    "more than one {what} counts on each, so user shares can add up to more than 1."
)

QUESTIONS: dict[str, _Question] = {
    "artists": _Question(
        summary="favourite artists, scored by likes, playlist adds, full plays and skips",
        title="Favourite artists",
        columns=["artist", *FAVOURITE_COLUMNS],
        chart=Chart("bars", x="artist", value="score"),
        note=_favourites_note("artist"),
        body=_favourites("artist"),
    ),
    "genres": _Question(
        summary="favourite genres, scored like artists",
        title="Favourite genres",
        columns=["genre", *FAVOURITE_COLUMNS],
        chart=Chart("bars", x="genre", value="score"),
        note=_favourites_note("genre"),
        body=_favourites("genre"),
    ),
    "peak-times": _Question(
        summary="events and active users by weekday and hour, in the asked time zone",
        title="Peak times",
        columns=["weekday", "hour", "events", "active_users"],
        chart=Chart("heatmap", x="hour", y="weekday", value="events"),
        note="Weekday and hour in the asked time zone; only hours with events are listed.",
        body=_peak_times,
    ),
    "devices": _Question(
        summary="share of users and events per device",
        title="Devices",
        columns=["device", *SHARE_COLUMNS],
        chart=Chart("bars", x="device", value="event_share"),
        note=SHARE_NOTE.format(what="device"),
        body=_shares("device"),
    ),
    "platforms": _Question(
        summary="share of users and events per platform",
        title="Platforms",
        columns=["platform", *SHARE_COLUMNS],
        chart=Chart("bars", x="platform", value="event_share"),
        note=SHARE_NOTE.format(what="platform"),
        body=_shares("platform"),
    ),
    "app-versions": _Question(
        summary="users, events, skip rate and listening hours per app version",
        title="App versions",
        columns=["app_version", *SHARE_COLUMNS, "skip_rate", "listening_hours"],
        # Bars of the skip rate: shares are what devices and platforms show already; what
        # sets one release apart from the next is how often its users skip.
        chart=Chart("bars", x="app_version", value="skip_rate"),
        note=(
            SHARE_NOTE.format(what="app version")
            + " Skip rate = skips / (skips + finished plays); listening hours from play_end."
        ),
        body=_shares("app_version", listening=True),
    ),
    "activity": _Question(
        summary="events per user (percentiles) and the heavy users' share of events",
        title="Activity",
        columns=["measure", "value"],
        chart=Chart("table"),
        note=(
            "Percentiles are nearest-rank, over the users active in range. For one user: "
            "their events and their rank among everyone active in range (0 = the least "
            "active, 1 = the most), then everyone's figures."
        ),
        body=_activity,
        shape=_activity_rows,
        everyone_in_scope=True,
    ),
    "provided-vs-streamed": _Question(
        summary="explicit actions against plays and listening hours, per user and overall",
        title="Provided vs streamed",
        columns=[
            "scope",
            "users",
            "explicit_actions",
            "play_starts",
            "play_ends",
            "listening_hours",
            "explicit_per_play",
        ],
        chart=Chart("table"),
        note=(
            "Explicit actions: likes, skips, song and channel changes, playlist edits. For "
            "everyone: the totals, then each column's per-user percentile on its own "
            "(explicit_per_play over users with a play)."
        ),
        body=_provided_vs_streamed,
    ),
    "quality": _Question(
        summary="values that could not be used, per field, and timestamps missing or invalid",
        title="Data quality",
        columns=["field", "invalid_values", "share_of_rows"],
        chart=Chart("bars", x="field", value="invalid_values"),
        note=(
            "Rows are kept when a value is unusable: the value is dropped and counted here. "
            "A row without a usable timestamp is placed at its ingest time."
        ),
        body=_quality,
    ),
}
