"""The clinic's answers: the lead's board, who is under observation, who needs attention, one
patient's journey, and the archive of closed visits.

Live answers read the day's journeys and the stations' queues in Redis through the
`Lookups` the service (or `switchyard clinic`) binds; the archive is read from the lake in a
thread. `gauges` exports the board to Prometheus as `switchyard_clinic_*`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import pyarrow.compute as pc
import pyarrow.dataset as ds

from actors.api import Answer, Gauge, QueryError
from actors.clinic.archive import visits_lake
from actors.clinic.board import (
    COLUMNS,
    STATIONS,
    SUMMARY,
    Queue,
    station_rows,
    summary_row,
    under_observation,
)
from actors.clinic.desks import Desks
from actors.clinic.journey import STEPS, TIMES, day_of, read_visit

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from actors.api import DeadLetter, Lookups, Query

QUESTIONS = {
    "board": "per station and desk: waiting, in service, done today, per hour, wait and "
    "service times (mean, p90), utilisation",
    "summary": "the day at a glance: arrivals, in the clinic, under observation, outcomes, "
    "needing attention, visit length",
    "observation": "patients under observation, soonest to leave first, with their time left",
    "attention": "patients who need attention: the stations' dead letters, what is wrong and "
    "since when",
    "patient": "one patient's visits, every step with its time (--user PATIENT)",
    "visits": "closed visits from the archive, newest first (--since, --until, --limit)",
}
ATTENTION_CLASSES = ("clinic.arrival", "clinic.registration", "clinic.vaccination",
                     "clinic.monitoring", "clinic.reaction", "clinic.departure")  # fmt: skip
MAX_ROWS = 1000
FRESH_S = 1.0  # the day's visits and the dead letters: read once for what is asked this long
T = TypeVar("T")
MAX_VISITS = 20_000  # a day's visits read for the board: a clinic's day, many times over
STATES = ("waiting", "in_service", "done_today")  # observation: in service = observing


class ClinicAnalytics:
    """Answers for the clinic; `lake` is the clinic lake's root (the visit archive), `tz` the
    zone whose midnight begins the clinic's day, `desks` and `stations` how many the
    registration and vaccination classes have (the board lists them idle too)."""

    def __init__(
        self,
        *,
        lake: str | None = None,
        tz: str = "UTC",
        desks: int | str = 0,
        stations: int | str = 0,
        request_timeout_s: float | str = 30.0,
    ) -> None:
        self.lake = visits_lake(lake, float(request_timeout_s)) if lake else None
        self.zone = ZoneInfo(tz)
        self.desks = {  # shown on the board even while idle
            "registration": Desks("desk", desks).names if int(desks) else [],
            "vaccination": Desks("station", stations).names if int(stations) else [],
        }
        self._lookups: Lookups | None = None
        self._reading = asyncio.Lock()
        self._fresh: dict[str, tuple[float, Any]] = {}  # what `_shared` read, and when

    def bind(self, lookups: Lookups) -> None:
        self._lookups = lookups

    def questions(self) -> dict[str, str]:
        return QUESTIONS

    async def answer(self, question: str, query: Query) -> Answer:
        if question == "visits":
            return await asyncio.to_thread(self._visits, query)
        if question == "patient":
            return await self._patient(query)
        if question not in QUESTIONS:
            raise QueryError(f"the clinic answers no question {question!r}")
        now = time.time()
        if question == "attention":
            return _attention(await self._dead_letters())
        visits = await self._today(now)
        if question == "observation":
            return _observation(visits, now)
        if question == "summary":
            attention = len(await self._dead_letters())
            return Answer(
                "summary",
                "The clinic today",
                SUMMARY,
                [summary_row(visits, attention, now, self._day_start(now))],
            )
        queues = await self._queues()
        rows = await asyncio.to_thread(
            station_rows, visits, queues, now, self._day_start(now), self.desks
        )
        return Answer("board", "Stations today", COLUMNS, rows, note=_BOARD_NOTE)

    async def gauges(self) -> list[Gauge]:
        """The board as Prometheus gauges."""
        now = time.time()
        visits, queues = await self._today(now), await self._queues()
        rows = await asyncio.to_thread(
            station_rows, visits, queues, now, self._day_start(now), self.desks
        )
        patients = [((row[0], state), float(row[1 + n])) for row in rows if "/" not in row[0]
                    for n, state in enumerate(STATES)]  # fmt: skip
        letters = await self._dead_letters()
        attention = Counter(str(letter.summary().get("class", "")) for letter in letters)
        patients += [((cls.removeprefix("clinic."), "needs_attention"), float(attention[cls]))
                     for cls in ATTENTION_CLASSES]  # fmt: skip
        timing = [
            ((row[0], kind, stat), value)
            for row in rows
            for kind, stat, value in (("wait", "mean", row[5]), ("wait", "p90", row[6]),
                                      ("service", "mean", row[7]), ("service", "p90", row[8]))
            if value is not None
        ]  # fmt: skip
        busy = [((row[0],), row[9]) for row in rows if row[9] is not None]
        return [
            Gauge("clinic_patients", "Patients per station and state: waiting, in service, "
                  "done today (and observing, needing attention).", ("station", "state"), patients),
            Gauge("clinic_seconds", "Today's wait and service times per station and desk: mean "
                  "and p90.", ("station", "kind", "stat"), timing),
            Gauge("clinic_utilisation_ratio", "Share of the last hour a desk or station spent "
                  "serving.", ("station",), busy),
        ]  # fmt: skip

    # --- reading ---

    def _reader(self) -> Lookups:
        if self._lookups is None:
            raise QueryError("the clinic's live answers need its Redis (run them with the service)")
        return self._lookups

    def _day_start(self, now: float) -> float:
        local = datetime.fromtimestamp(now, self.zone)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    async def _shared(self, name: str, read: Callable[[], Awaitable[T]]) -> T:
        """What `read` gives, read at most once a `FRESH_S`: the answers of one poll (and
        every poller's, and the gauges) share one reading."""
        async with self._reading:
            now = time.monotonic()
            read_at, value = self._fresh.get(name, (-math.inf, None))
            if now - read_at > FRESH_S:
                value = await read()
                self._fresh[name] = (now, value)
        found: T = value
        return found

    async def _today(self, now: float) -> list[dict[str, Any]]:
        """Every visit that began today (in the clinic's zone) or is still open from earlier."""
        return await self._shared("today", functools.partial(self._read_today, now))

    async def _read_today(self, now: float) -> list[dict[str, Any]]:
        lookups = self._reader()
        days = sorted({day_of(self._day_start(now) - 86400), day_of(now),
                       day_of(self._day_start(now))})  # fmt: skip
        indexes = await lookups.records([f"day:{day}" for day in days])
        names = [f"visit:{visit}" for index in indexes for visit in index][-MAX_VISITS:]
        found = await lookups.records(names)
        visits = await asyncio.to_thread(_read_visits, found)  # a day's worth: off the loop
        start = self._day_start(now)
        return [v for v in visits if v.get("arrived_at", 0) >= start or "departed_at" not in v]

    async def _queues(self) -> dict[str, Queue]:
        stats = await self._reader().streams([s.cls for s in STATIONS])
        return {cls: Queue(s.backlog, s.pending) for cls, s in stats.items()}

    async def _dead_letters(self) -> list[DeadLetter]:
        """The stations' dead letters but those resolved since: the patient has passed that
        station after all (the desk completed the record). They stay in the dead letters."""
        return await self._shared("attention", self._read_dead_letters)

    async def _read_dead_letters(self) -> list[DeadLetter]:
        lookups = self._reader()
        every = await asyncio.gather(
            *(lookups.dead_letters(c, MAX_ROWS) for c in ATTENTION_CLASSES)
        )
        found = [letter for letters in every for letter in letters]
        patients = [_patient_of(letter) for letter in found]
        current = await lookups.records([f"patient:{p}" for p in patients])
        visits = await lookups.records([f"visit:{c.get('visit', '')}" for c in current])
        return [
            letter
            for letter, visit in zip(found, visits, strict=True)
            if not _resolved(letter, read_visit(visit))
        ]

    async def _patient(self, query: Query) -> Answer:
        if not query.user:
            raise QueryError("whose journey? give the patient's id (--user, or /patients/<id>)")
        lookups = self._reader()
        [current] = await lookups.records([f"patient:{query.user}"])
        visits = []
        if current.get("visit"):
            [fields] = await lookups.records([f"visit:{current['visit']}"])
            visits = [read_visit(fields)] if fields else []
        archived = await asyncio.to_thread(self._archived, query.user)
        seen = {v["visit_id"] for v in visits}
        visits += [v for v in archived if v["visit_id"] not in seen]
        if not visits:
            raise QueryError(f"no visit of patient {query.user!r}, open or archived")
        rows = [row for visit in visits for row in _steps(visit)]
        stuck = [r for r in _attention(await self._dead_letters()).rows if r[0] == query.user]
        current_visit = visits[0]["visit_id"]
        rows += [[current_visit, "needs attention", r[3], f"{r[1]}: {r[2]}"] for r in stuck]
        title = f"Patient {query.user}: {len(visits)} visit(s), newest first"
        return Answer("patient", title, ["visit_id", "step", "at", "details"], rows)

    def _archived(self, patient: str) -> list[dict[str, Any]]:
        """The patient's archived visits, newest first (a scan: the archive is small)."""
        if self.lake is None or not (paths := self.lake.segments()):
            return []
        data = ds.dataset(paths, schema=self.lake.schema, filesystem=self.lake.fs)
        table = data.to_table(filter=pc.field("patient_id") == patient)
        visits = [_from_row(row) for row in table.to_pylist()]
        return sorted(visits, key=lambda v: -v.get("arrived_at", 0))[:MAX_ROWS]

    def _visits(self, query: Query) -> Answer:
        columns = ["visit_id", "patient_id", "arrived_at", "departed_at", "outcome", "visit_s",
                   "vaccination_station", "nurse", "vaccine", "lot"]  # fmt: skip
        if self.lake is None or not (paths := self.lake.segments()):
            return Answer("visits", "Closed visits", columns, [])
        until = query.until or datetime.now(UTC) + timedelta(seconds=1)
        since = query.since or until - timedelta(days=1)
        data = ds.dataset(paths, schema=self.lake.schema, filesystem=self.lake.fs)
        moment = pc.field("arrived_at")
        table = data.to_table(columns=columns, filter=(moment >= since) & (moment < until))
        rows = sorted(table.to_pylist(), key=lambda r: r["arrived_at"], reverse=True)
        limit = min(query.limit or MAX_ROWS, MAX_ROWS)
        return Answer("visits", "Closed visits, newest first", columns,
                      [[r[c] for c in columns] for r in rows[:limit]])  # fmt: skip


_BOARD_NOTE = (
    "wait: from leaving the station before to being taken in; service: taken in to done "
    "(observation: time observed); utilisation: share of the last hour spent serving."
)


def _observation(visits: list[dict[str, Any]], now: float) -> Answer:
    columns = ["patient_id", "visit_id", "vaccinated_at", "ends_at", "left_s", "reactions"]
    rows = [
        [v["patient_id"], v["visit_id"], _time(v.get("vaccinated_at")),
         _time(v.get("observation_ends_at")),
         round(max(0.0, v.get("observation_ends_at", now) - now), 1), len(v["reactions"])]
        for v in under_observation(visits)
    ]  # fmt: skip
    return Answer("observation", "Under observation", columns, rows)


def _read_visits(records: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [read_visit(record) for record in records if record]


def _patient_of(letter: DeadLetter) -> str:
    envelope = letter.envelope
    payload = envelope.payload if envelope is not None else None
    patient = payload.get("patient_id") if isinstance(payload, dict) else None
    return patient if isinstance(patient, str) else "?"


def _resolved(letter: DeadLetter, visit: dict[str, Any]) -> bool:
    """Whether the patient left the letter's station after the letter was written."""
    fields = letter.summary()
    station = next((s for s in STATIONS if s.cls == fields.get("class")), None)
    failed = _float(fields.get("failed_ts"))
    done = visit.get(station.done) if station is not None else None
    return isinstance(done, float) and failed is not None and done >= failed


def _attention(letters: list[DeadLetter]) -> Answer:
    columns = ["patient_id", "station", "problem", "since", "attempts", "event_id"]
    rows = []
    for letter in letters:
        fields = letter.summary()
        cls = str(fields.get("class", ""))
        rows.append([
            _patient_of(letter), cls.removeprefix("clinic."),
            _problem(fields), _time(_float(fields.get("failed_ts"))),
            int(_float(fields.get("attempts")) or 0), str(fields.get("id", "")),
        ])  # fmt: skip
    rows.sort(key=lambda r: str(r[3]))
    return Answer(
        "attention",
        "Needs attention",
        columns,
        rows[:MAX_ROWS],
        note="fix the data, then: switchyard dlq replay --class clinic.<station>",
    )


def _problem(fields: dict[str, Any]) -> str:
    """What went wrong, without the error's module path: `registration is missing name`."""
    error, kind = str(fields.get("error", "")), str(fields.get("error_type", ""))
    head, _, said = error.partition(": ")
    return (said if head.rpartition(".")[2] == kind else error)[:300]


def _steps(visit: dict[str, Any]) -> list[list[Any]]:
    """A visit's steps in order, each with what happened there."""
    details = {
        "screened_at": ("temperature_c", "screening"),
        "registered_at": ("registration_desk",),
        "vaccinated_at": ("vaccination_station", "nurse", "vaccine", "lot"),
        "departed_at": ("outcome", "visit_s"),
    }
    rows = []
    for name, step in STEPS:
        if name in visit:
            said = ", ".join(f"{d}={visit[d]}" for d in details.get(name, ()) if d in visit)
            rows.append([visit["visit_id"], step, _time(visit[name]), said])
    for reaction in visit.get("reactions", []):
        said = f"severity={reaction.get('severity')}, note={reaction.get('note', '')}"
        rows.append([visit["visit_id"], "reaction", _time(reaction.get("at")), said])
    return sorted(rows, key=lambda r: str(r[2]))


def _from_row(row: dict[str, Any]) -> dict[str, Any]:
    """An archived visit in the shape of `journey.read_visit`."""
    visit = {
        k: v for k, v in row.items() if v is not None and k not in ("reactions", "date", "hour")
    }
    for name in TIMES:
        if isinstance(visit.get(name), datetime):
            visit[name] = visit[name].timestamp()
    visit["reactions"] = json.loads(row.get("reactions") or "[]")
    return visit


def _time(value: Any) -> str | None:
    return datetime.fromtimestamp(value, UTC).isoformat() if isinstance(value, float) else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
