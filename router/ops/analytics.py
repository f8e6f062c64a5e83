"""Analytics: questions a workload answers over what it stored, for the CLI, HTTP and the page.

A workload names its provider in the config (`analytics.<workload>.provider`, an import path
like an actor's) with its options. A provider lists its questions and answers one at a time;
answering may block (a query over files), so the service runs it in a thread. An `Answer` is
a table with a hint of how to draw it, so one page draws every workload's answers.
"""

from __future__ import annotations

import asyncio
import csv
import inspect
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from router.runtime.loader import import_object

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    from router.config import AnalyticsConfig
    from router.streams.deadletters import DeadLetter
    from router.streams.transport import StreamStats

Format = Literal["table", "json", "csv"]
MAX_AGE_S = 1000 * 365 * 86400  # an age further back than this is a typo


class QueryError(ValueError):
    """A question that does not exist, or parameters that make no sense; the message says which."""


@dataclass(frozen=True, slots=True)
class Query:
    """For whom and over when: whose answer (a user, or a device: whatever the workload's
    answers are about; None for everyone), a time range, the zone to read it in, and, for the
    questions that take them, at most how many rows and which kind of thing."""

    user: str | None = None
    since: datetime | None = None  # inclusive, aware
    until: datetime | None = None  # exclusive, aware
    tz: str = "UTC"
    limit: int | None = None  # a question's own bound applies too
    kind: str | None = None  # one kind of thing only (a reading's kind, say)

    @classmethod
    def parse(
        cls,
        user: str | None = None,
        since: str | None = None,
        until: str | None = None,
        tz: str | None = None,
        *,
        limit: str | int | None = None,
        kind: str | None = None,
    ) -> Query:
        """From text (CLI flags, URL parameters): ISO dates or times, read in `tz`, or ages
        before now (`90s`, `15m`, `1h`, `2d`, `1w`)."""
        zone_name = tz or "UTC"
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise QueryError(
                f"unknown time zone {zone_name!r} (say UTC, Europe/Paris, ...)"
            ) from None
        start, end = _moment(since, zone, "since"), _moment(until, zone, "until")
        if start is not None and end is not None and start >= end:
            raise QueryError(f"since ({since}) must be before until ({until})")
        return cls(
            user=user or None, since=start, until=end, tz=zone_name,
            limit=_limit(limit), kind=kind or None,
        )  # fmt: skip


AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _limit(text: str | int | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        limit = int(text)
    except ValueError:
        raise QueryError(f"limit: {text!r} is not a whole number") from None
    if limit < 1:
        raise QueryError(f"limit must be at least 1, not {limit}")
    return limit


def _moment(text: str | None, zone: ZoneInfo, name: str) -> datetime | None:
    if not text:
        return None
    if age := AGE.fullmatch(text.strip()):
        seconds = float(age.group(1)) * AGE_UNITS[age.group(2)]
        if seconds > MAX_AGE_S:
            raise QueryError(f"{name}: {text!r} is too long ago")
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            f"{name}: {text!r} is not an ISO date or time (2025-10-27, ...) nor an age (1h, 2d)"
        ) from None
    if isinstance(moment, datetime) and moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Chart:
    """How to draw an answer: `bars` (a label column, a value column), `heatmap` (two label
    columns, x and y, and a value column) or `table` (just the table)."""

    kind: Literal["bars", "heatmap", "table"] = "table"
    x: str | None = None  # bars: the label; heatmap: the column across
    y: str | None = None  # heatmap: the column down
    value: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A table: column names and rows of JSON values, how to draw it, and how it was worked
    out (a score's weights, say), in a sentence or two."""

    question: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    chart: Chart = field(default_factory=Chart)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = _jsonable(asdict(self))
        return document


@dataclass(frozen=True, slots=True)
class Gauge:
    """A figure a provider exports to Prometheus: `switchyard_<name>`, one sample per set of
    label values."""

    name: str
    help: str
    labels: tuple[str, ...]
    samples: Sequence[tuple[tuple[str, ...], float]]


@runtime_checkable
class Gauged(Protocol):
    """A provider that exports figures to Prometheus."""

    async def gauges(self) -> list[Gauge]:
        """Its gauges now."""
        ...


class Lookups(Protocol):
    """What a provider may read of its workload's live state in Redis (the service or the
    command line hands it over with `bind`)."""

    async def records(self, names: Sequence[str]) -> list[dict[str, str]]:
        """The workload's records (`ctx.update`), in the order asked; empty: none."""
        ...

    async def dead_letters(self, cls: str, limit: int = 100) -> list[DeadLetter]:
        """A class's dead letters, oldest first."""
        ...

    async def streams(self, classes: Sequence[str]) -> dict[str, StreamStats]:
        """Backlog, pending and dead letters of these classes."""
        ...


class Analytics(Protocol):
    """What a workload's analytics provider offers.

    `answer` may block (a query over files: it runs in a thread) or be a coroutine (an
    answer over Redis, through the `Lookups` a provider that defines `bind(lookups)` is
    given). A provider may also define `async gauges() -> list[Gauge]`, which the service
    exports, refreshed every few seconds.
    """

    def questions(self) -> dict[str, str]:
        """Question name -> what it answers, in one line."""
        ...

    def answer(self, question: str, query: Query) -> Answer | Awaitable[Answer]:
        """Work out one answer; QueryError for an unknown question or bad parameters."""
        ...


def load_analytics(config: AnalyticsConfig, lookups: Lookups | None = None) -> Analytics:
    """The provider a config names, built with its options, and bound to `lookups` if it
    reads live state."""
    provider: Any = import_object(config.provider)
    built: Analytics = provider(**config.options)
    bind = getattr(built, "bind", None)
    if bind is not None and lookups is not None:
        bind(lookups)
    return built


async def answer_of(provider: Analytics, question: str, query: Query) -> Answer:
    """The provider's answer, worked out in a thread unless the provider's answer awaits."""
    if inspect.iscoroutinefunction(provider.answer):
        found: Answer = await provider.answer(question, query)
        return found
    answered = await asyncio.to_thread(provider.answer, question, query)
    assert isinstance(answered, Answer)
    return answered


def render(answer: Answer, form: Format) -> str:
    """The answer as a terminal table, JSON or CSV."""
    if form == "json":
        return json.dumps(answer.to_json(), indent=2)
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(answer.columns)
        writer.writerows(_jsonable(answer.rows))
        return out.getvalue().rstrip("\n")
    return _table(answer)


def _table(answer: Answer) -> str:
    cells = [[_cell(value) for value in row] for row in answer.rows]
    widths = [
        max([len(name), *(len(row[index]) for row in cells)])
        for index, name in enumerate(answer.columns)
    ]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in answer.rows)
        for i in range(len(answer.columns))
    ]
    lines = [
        answer.title,
        "  ".join(
            n.rjust(w) if right else n.ljust(w)
            for n, w, right in zip(answer.columns, widths, numeric, strict=True)
        ).rstrip(),
    ]
    lines += [
        "  ".join(
            c.rjust(w) if right else c.ljust(w)
            for c, w, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    ]
    if not answer.rows:
        lines.append("(nothing in this range)")
    if answer.note:
        lines.append(answer.note)
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(_jsonable(value))


def _jsonable(value: Any) -> Any:
    """Dates and times as ISO text, everything else as JSON has it."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
