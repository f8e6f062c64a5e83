"""The doorbell's analytics: one device's timeline and its readings per minute, over the
doorbell lakes (`<lake>/events`, `<lake>/readings`), answered by DuckDB.

The device is the query's `user` (whose answer: here, a device's). Both answers are bounded,
in rows (`limit`, capped by the question) and in work: with no `since`, the timeline reads
the last 7 days and the readings the last day, and only the hours in range are listed when
the range is short enough (a month). Each answer opens its own in-memory DuckDB, as the music
analytics does, because answers run in worker threads at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import duckdb

from actors.api import Answer, Chart, Query, QueryError, partitions_between
from actors.doorbell.readings import readings_lake
from actors.doorbell.timeline import events_lake

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.api import Lake

LISTED_HOURS = 31 * 24  # a longer range lists the whole lake, not one folder per hour


@dataclass(frozen=True, slots=True)
class _Question:
    summary: str
    columns: list[str]
    default_limit: int
    max_limit: int
    sql: str  # over a view named `rows`; $device, $since, $until, $kind, $limit bound
    lake: Callable[[str], Lake]
    newest_first: bool
    default_age: timedelta  # how far back, when the query says no `since`
    json_columns: tuple[int, ...] = ()  # kept as JSON text, answered as what they were


QUESTIONS = {
    "timeline": _Question(
        summary="one device's rings, detections, clips and outages, newest first",
        columns=["at", "kind", "details", "clip_url", "event_id"],
        default_limit=50,
        max_limit=1000,
        sql="""
            SELECT ts, kind, details, clip_url, event_id FROM rows
            WHERE device_id = $device AND ts >= $since AND ts < $until
              AND ($kind IS NULL OR kind = $kind)
            ORDER BY ts DESC, event_id DESC LIMIT $limit
        """,
        lake=events_lake,
        newest_first=True,
        default_age=timedelta(days=7),
        json_columns=(2,),
    ),
    "readings": _Question(
        summary="one device's readings per minute: count, min, max, mean, last",
        columns=["minute", "kind", "count", "min", "max", "mean", "last", "last_at"],
        default_limit=1440,
        max_limit=10080,
        sql="""
            SELECT minute, kind, sum(count)::BIGINT, min(min), max(max),
                   sum(sum) / sum(count), arg_max(last, last_at), max(last_at)
            FROM rows
            WHERE device_id = $device AND minute >= date_trunc('minute', $since::TIMESTAMPTZ)
              AND minute < $until AND ($kind IS NULL OR kind = $kind)
            GROUP BY minute, kind ORDER BY minute DESC, kind LIMIT $limit
        """,
        lake=readings_lake,
        newest_first=False,
        default_age=timedelta(days=1),
    ),
}
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


class DoorbellAnalytics:
    """Questions about one doorbell, over the doorbell lakes under `lake` (a path or an s3://
    URL)."""

    def __init__(self, *, lake: str, **options: Any) -> None:
        self.lake = lake
        # One Lake per question for every answer: each remembers its compacted segments'
        # footers, so a question does not read them all again.
        self._lakes = {name: asked.lake(lake) for name, asked in QUESTIONS.items()}
        self.options = options  # what else the config says; nothing more is needed yet

    def questions(self) -> dict[str, str]:
        return {name: question.summary for name, question in QUESTIONS.items()}

    def answer(self, question: str, query: Query) -> Answer:
        asked = _question(question)
        if not query.user:
            raise QueryError(f"{question} is about one device: name it (user=<device>)")
        now = datetime.now(UTC)
        since, until = query.since or now - asked.default_age, query.until or LATEST
        listed_until = query.until or now + timedelta(hours=1)  # a device's clock a bit ahead
        limit = min(query.limit or asked.default_limit, asked.max_limit)
        params = {"device": query.user, "since": since, "until": until, "kind": query.kind,
                  "limit": limit}  # fmt: skip
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            self._lakes[question].register(con, "rows", _partitions(since, listed_until))
            found = con.execute(asked.sql, params).fetchall()
        rows = [_shaped(row, query.tz, asked.json_columns) for row in found]
        if not asked.newest_first:
            rows.reverse()
        return Answer(
            question=question,
            title=f"{question} of {query.user}",
            columns=list(asked.columns),
            rows=rows,
            chart=Chart("table"),
            note=f"at most {limit} rows" if len(rows) == limit else "",
        )


def _question(name: str) -> _Question:
    try:
        return QUESTIONS[name]
    except KeyError:
        raise QueryError(f"unknown question {name!r}; ask one of {', '.join(QUESTIONS)}") from None


def _partitions(since: datetime, until: datetime) -> list[str] | None:
    """The hours to list, when the range is short enough to list them one by one."""
    if until - since > timedelta(hours=LISTED_HOURS):
        return None
    return partitions_between(since, until)


def _shaped(row: tuple[Any, ...], tz: str, json_columns: tuple[int, ...]) -> list[Any]:
    """Times in the query's zone, JSON text as the object it was."""
    zone = ZoneInfo(tz)
    shaped: list[Any] = [v.astimezone(zone) if isinstance(v, datetime) else v for v in row]
    for index in json_columns:
        shaped[index] = json.loads(shaped[index])
    return shaped
