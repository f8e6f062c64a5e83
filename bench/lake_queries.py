"""Lake query benchmark: MusicAnalytics' answers over a synthetic lake, beside DuckDB alone.

    .venv/bin/python -m bench.lake_queries [--rows 10000000] [--runs 5] [--quick] [--lake DIR]
                                           [--question NAME ...]

Generates N interactions with DuckDB SQL straight into the lake's layout (Parquet, zstd, under
`date=YYYY-MM-DD/hour=H` folders, the columns and types of actors/music/schema.py), in a
temporary directory unless `--lake` names one (kept, and reused when it already holds a lake).
The data: ~100k users with skewed activity, Zipf-like artists (~5,000), 12 genres, 3
platforms, 8 devices, 8 app versions, a mix of actions dominated by plays, October 2025 with
daily peaks, a few missing or unreadable timestamps and unusable values.

Then, for every question and three scopes (everyone over the whole lake, one user over the
whole lake, everyone over the last week), the p50 over `--runs` of:
  provider  MusicAnalytics.answer(): a fresh DuckDB, Lake.register, the query, the rows shaped
  duckdb    the same SQL and parameters (MusicAnalytics.plan) on one long-lived connection,
            over a view of read_parquet on the same files: the floor the provider sits on
Prints one table and the lake's bytes per interaction; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow.parquet as pq

from actors.api import Query
from actors.music.analytics import MusicAnalytics
from actors.music.lake import SUFFIX
from actors.music.schema import SCHEMA
from bench.harness import progress

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

DEFAULT_ROWS = 10_000_000
QUICK_ROWS = 1_000_000
TARGET_MS = 1000.0  # every answer under a second at 10M rows
USERS = 100_000
SCRAMBLE, SCRAMBLE_MODULUS = 7919, 100_003  # user ids: ranks mixed up (primes, one to one)
ARTISTS = 5_000
GENRES = (
    "pop", "rock", "hip-hop", "electronic", "jazz", "classical", "r&b", "country",
    "latin", "metal", "folk", "reggae",
)  # fmt: skip
DEVICES = {  # device -> platform
    "iphone": "ios", "ipad": "ios", "android-phone": "android", "android-tablet": "android",
    "web-browser": "web", "desktop-app": "web", "smart-speaker": "web", "car": "web",
}  # fmt: skip
APP_VERSIONS = ("5.9.0", "5.9.1", "5.10.0", "5.10.2", "5.11.0", "5.12.0", "5.12.1", "6.0.0")
ACTION_WEIGHTS = {
    "play_start": 34, "play_end": 32, "skip_song": 12, "like_song": 6, "change_song": 5,
    "add_to_playlist": 4, "select_channel": 4, "remove_from_playlist": 1, "remove_channel": 2,
}  # fmt: skip
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 5, 7, 6, 5, 5, 6, 5, 5, 6, 7, 8, 9, 10, 9, 7, 4, 2)  # UTC
MONTH_START = datetime(2025, 10, 1, tzinfo=UTC)
MONTH_DAYS = 31
BENCH_USER_RANK = 1_000  # the one user timed: busy, but far from the very busiest
ZONE = "Europe/Paris"


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    query: Query


@dataclass(frozen=True, slots=True)
class Timing:
    question: str
    scope: str
    provider_ms: float
    duckdb_ms: float
    rows: int


# --- the synthetic lake ---


def _text_list(values: Sequence[str]) -> str:
    return "[" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + "]"


def _weighted(weights: dict[str, int] | dict[int, int]) -> str:
    """A SQL list in which each value appears as often as its weight: pick one uniformly."""
    picks = [value for value, weight in weights.items() for _ in range(weight)]
    if all(isinstance(value, int) for value in picks):
        return "[" + ", ".join(str(value) for value in picks) + "]"
    return _text_list([str(value) for value in picks])


def user_id(rank: int) -> str:
    """The id of the user at activity rank `rank` (0: the busiest), as the lake has it."""
    return str(rank * SCRAMBLE % SCRAMBLE_MODULUS)


def generation_sql(rows: int, folder: Path) -> str:
    """One COPY: `u(i, salt)` is a deterministic uniform number in [0, 1) per row and use."""
    hours = _weighted(dict(enumerate(HOUR_WEIGHTS)))
    actions = _weighted(ACTION_WEIGHTS)
    devices, platforms = list(DEVICES), list(DEVICES.values())
    return f"""
CREATE OR REPLACE MACRO u(i, salt) AS ((hash(i, salt) % 1000003)::DOUBLE / 1000003);
COPY (
WITH base AS (
    SELECT i,
           floor({USERS} * pow(u(i, 'user'), 1.6))::BIGINT AS user_rank,
           floor({ARTISTS} * pow(u(i, 'artist'), 3))::BIGINT AS artist_n,
           {actions}[1 + floor(u(i, 'action') * {sum(ACTION_WEIGHTS.values())})::INT] AS action,
           TIMESTAMPTZ '{MONTH_START:%Y-%m-%d} 00:00:00+00'
               + to_days(floor(u(i, 'day') * {MONTH_DAYS})::INT)
               + to_hours({hours}[1 + floor(u(i, 'hour') * {sum(HOUR_WEIGHTS)})::INT])
               + to_seconds(floor(u(i, 'second') * 3600)::BIGINT) AS source_ts,
           u(i, 'ts') AS ts_draw, u(i, 'bad') AS bad_draw, u(i, 'play') AS play_draw
    FROM range({rows}) AS r(i)
), shaped AS (
    SELECT *,
           (user_rank * {SCRAMBLE} % {SCRAMBLE_MODULUS})::VARCHAR AS user_id,
           CASE WHEN ts_draw < 0.003 THEN 'missing' WHEN ts_draw < 0.004 THEN 'invalid'
                ELSE 'source' END AS ts_status,
           source_ts + INTERVAL 2 SECOND AS ingest,
           1 + (hash(user_rank, 'device') % {len(devices)})::INT
               + CASE WHEN u(i, 'second-device') < 0.15 THEN 1 ELSE 0 END AS device_n,
           action IN ('play_start', 'play_end', 'skip_song', 'like_song', 'change_song',
                      'add_to_playlist', 'remove_from_playlist') AS on_track
    FROM base
)
SELECT 'ev-' || i AS event_id,
       user_id,
       action,
       CASE WHEN ts_status = 'source' THEN source_ts ELSE ingest END AS ts,
       ts_status,
       CASE ts_status WHEN 'source' THEN strftime(source_ts, '%Y-%m-%dT%H:%M:%SZ')
                      WHEN 'invalid' THEN 'yesterday-ish' END AS ts_raw,
       ingest AS ingest_ts,
       {_text_list(["home", "search", "library", "player", "radio"])}
           [1 + (hash(i, 'screen') % 5)::INT] AS screen,
       {_text_list(["top", "recent", "for-you", "charts"])}
           [1 + (hash(i, 'section') % 4)::INT] AS section,
       {_text_list(devices)}[1 + (device_n - 1) % {len(devices)}] AS device,
       {_text_list(platforms)}[1 + (device_n - 1) % {len(devices)}] AS platform,
       CASE WHEN bad_draw >= 0.002 THEN {_text_list(APP_VERSIONS)}
           [{len(APP_VERSIONS)} - floor({len(APP_VERSIONS)} * pow(u(user_rank, 'app'), 2))::INT]
       END AS app_version,
       CASE WHEN on_track THEN 'track-' || artist_n || '-' || (hash(i, 'track') % 20) END
           AS track,
       CASE WHEN on_track THEN 'Artist ' || artist_n END AS artist,
       CASE WHEN on_track THEN {_text_list(GENRES)}[1 + artist_n % {len(GENRES)}] END AS genre,
       CASE WHEN action IN ('select_channel', 'remove_channel')
            THEN 'channel-' || (hash(i, 'channel') % 50) END AS channel,
       CASE WHEN action IN ('add_to_playlist', 'remove_from_playlist')
            THEN 'playlist-' || (hash(user_id, i) % 5) END AS playlist,
       CASE WHEN action = 'play_end' AND bad_draw >= 0.001
            THEN CASE WHEN play_draw < 0.6 THEN 150 + play_draw * 200 ELSE play_draw * 150 END
       END AS seconds_listened,
       CASE WHEN action = 'play_end' THEN play_draw < 0.6 END AS completed,
       list_concat(
           CASE WHEN ts_status = 'invalid' THEN ['timestamp'] ELSE [] END,
           CASE WHEN bad_draw < 0.002 THEN ['app_version'] ELSE [] END,
           CASE WHEN action = 'play_end' AND bad_draw < 0.001 THEN ['seconds_listened']
                ELSE [] END
       )::VARCHAR[] AS invalid,
       strftime(CASE WHEN ts_status = 'source' THEN source_ts ELSE ingest END, '%Y-%m-%d')
           AS date,
       hour(CASE WHEN ts_status = 'source' THEN source_ts ELSE ingest END)::INTEGER AS hour
FROM shaped
) TO '{folder}' (FORMAT PARQUET, COMPRESSION zstd, PARTITION_BY (date, hour));
"""


def generate(folder: Path, rows: int) -> None:
    progress(f"generating {rows:,} interactions into {folder} ...")
    started = time.perf_counter()
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")  # `date` and `hour` folders are UTC, as Lake's
        con.execute(generation_sql(rows, folder))
    progress(f"generated in {time.perf_counter() - started:.1f} s")


def parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*/*/*{SUFFIX}"))


def check_schema(folder: Path) -> None:
    """The files must read as the lake's own: same columns, same types, same folders."""
    files = parquet_files(folder)
    if not files:
        raise SystemExit(f"no lake files under {folder}")
    written = pq.read_schema(files[0])
    expected = [(f.name, f.type) for f in SCHEMA]
    found = [(f.name, f.type) for f in written]
    if found != expected:
        raise SystemExit(f"generated schema differs from the lake's:\n{found}\n!=\n{expected}")
    partition = files[0].relative_to(folder).parts
    if not (partition[0].startswith("date=") and partition[1].startswith("hour=")):
        raise SystemExit(f"unexpected partition folders: {partition}")


def count_rows(folder: Path) -> int:
    with duckdb.connect() as con:
        found = con.execute(
            "SELECT count(*) FROM read_parquet($glob)", {"glob": f"{folder}/*/*/*{SUFFIX}"}
        ).fetchone()
    return int(found[0]) if found else 0


# --- timing ---


def scopes() -> list[Scope]:
    week_from = MONTH_START + timedelta(days=MONTH_DAYS - 7)
    return [
        Scope("everyone", Query(tz=ZONE)),
        Scope(f"user {user_id(BENCH_USER_RANK)}", Query(user=user_id(BENCH_USER_RANK), tz=ZONE)),
        Scope(
            "last week",
            Query(since=week_from, until=MONTH_START + timedelta(days=MONTH_DAYS), tz=ZONE),
        ),
    ]


def raw_connection(folder: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB alone on the same files, with the view MusicAnalytics' SQL reads."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    pattern = f"{folder}/*/*/*{SUFFIX}".replace("'", "''")
    con.execute(
        f"CREATE VIEW interactions AS SELECT * FROM read_parquet('{pattern}', "
        "hive_partitioning = true, hive_types = {'date': VARCHAR, 'hour': INTEGER})"
    )
    return con


def p50_ms(action: Callable[[], int], runs: int) -> tuple[float, int]:
    """The median wall time of `action` in ms, and the row count it last returned."""
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), rows


def measure(folder: Path, runs: int, only: Sequence[str] | None = None) -> list[Timing]:
    analytics = MusicAnalytics(lake=str(folder))
    timings = []
    with raw_connection(folder) as con:
        for question in only or analytics.questions():
            for scope in scopes():
                plan = analytics.plan(question, scope.query)

                def provider(question: str = question, query: Query = scope.query) -> int:
                    return len(analytics.answer(question, query).rows)

                def raw(sql: str = plan.sql, params: object = plan.params) -> int:
                    return len(con.execute(sql, params).fetchall())

                provider_ms, rows = p50_ms(provider, runs)
                duckdb_ms, _ = p50_ms(raw, runs)
                timings.append(Timing(question, scope.name, provider_ms, duckdb_ms, rows))
                progress(
                    f"{question:<21} {scope.name:<11} provider {provider_ms:7.0f} ms  "
                    f"duckdb {duckdb_ms:7.0f} ms"
                )
    return timings


def table(timings: Sequence[Timing], rows: int, bytes_per_row: float, runs: int) -> str:
    lines = [
        f"{rows:,} interactions, p50 of {runs} runs, times in ms "
        f"(target < {TARGET_MS:.0f} ms per answer)",
        f"{'question':<21} {'scope':<11} {'provider':>9} {'duckdb':>9} {'ratio':>6} "
        f"{'rows':>5}  target",
    ]
    for t in timings:
        met = "met" if t.provider_ms < TARGET_MS else "MISSED"
        lines.append(
            f"{t.question:<21} {t.scope:<11} {t.provider_ms:9.0f} {t.duckdb_ms:9.0f} "
            f"{t.provider_ms / t.duckdb_ms:6.2f} {t.rows:5d}  {met}"
        )
    lines.append(f"lake: {bytes_per_row:.1f} bytes per interaction (Parquet, zstd)")
    return "\n".join(lines)


# --- the command ---


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lake_queries",
        description="MusicAnalytics' answers over a synthetic lake, beside DuckDB alone.",
    )
    parser.add_argument("--rows", type=int, help=f"interactions (default {DEFAULT_ROWS:,})")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (p50)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} interactions")
    parser.add_argument(
        "--lake", type=Path, help="generate the lake here and keep it (reused if already there)"
    )
    parser.add_argument(
        "--question",
        action="append",
        choices=list(MusicAnalytics(lake="").questions()),
        help="time only this question (repeatable; default: all)",
    )
    return parser.parse_args(argv)


def run(folder: Path, rows: int, runs: int, only: Sequence[str] | None) -> None:
    if parquet_files(folder):
        rows = count_rows(folder)
        progress(f"reusing the lake in {folder}: {rows:,} interactions")
    else:
        generate(folder, rows)
    check_schema(folder)
    size = sum(path.stat().st_size for path in parquet_files(folder))
    timings = measure(folder, runs, only)
    print(table(timings, rows, size / rows, runs))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    if args.lake is not None:
        run(args.lake.resolve(), rows, args.runs, args.question)
        return 0
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as temporary:
        run(Path(temporary) / "lake", rows, args.runs, args.question)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
