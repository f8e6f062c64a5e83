"""The clinic lead's board, worked out from the day's journeys and the stations' queues.

Pure functions of what they are given (visits as `journey.read_visit` reads them, each
station's queue, the time now), so a hand-counted day checks every figure.

A station's figures over the day's visits (since the day began, in the clinic's zone):
- done: visits that left it today; per hour: those that left it in the last hour;
- wait: from joining its queue (leaving the station before) to being taken in;
- service: from being taken in to leaving it (observation: the time observed);
- utilisation (desks and stations): the share of the last hour (or of the time since the
  first arrival, if shorter) it spent serving.
Waiting and in service come from the station's class stream (its backlog and its entries
being handled); under observation, from the journeys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Station:
    """A station, its class, and the journey's times that bound its wait and service."""

    name: str
    cls: str
    queued: str | None  # joined the queue (None: no queue of its own)
    started: str | None  # taken in (None: no service time)
    done: str
    desk: str | None = None  # the journey's field naming the desk or station that served


STATIONS = (
    Station("arrival", "clinic.arrival", "arrived_at", None, "screened_at"),
    Station("registration", "clinic.registration", "screened_at", "registration_started_at",
            "registered_at", "registration_desk"),
    Station("vaccination", "clinic.vaccination", "registered_at", "vaccination_started_at",
            "vaccinated_at", "vaccination_station"),
    Station("observation", "clinic.monitoring", "vaccinated_at", "observation_started_at",
            "departed_at"),
    Station("departure", "clinic.departure", None, None, "departed_at"),
)  # fmt: skip
COLUMNS = [
    "station", "waiting", "in_service", "done_today", "per_hour", "wait_mean_s", "wait_p90_s",
    "service_mean_s", "service_p90_s", "utilisation",
]  # fmt: skip
SUMMARY = [  # vaccinated: doses given; screened out, referred: those who left so
    "arrived_today", "in_clinic", "observing", "vaccinated", "screened_out", "referred",
    "needs_attention", "visit_mean_s", "visit_p90_s", "departures_per_hour",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Queue:
    """A station's class stream now: events not yet taken, and those being handled."""

    waiting: int = 0
    in_service: int = 0


def station_rows(
    visits: list[dict[str, Any]],
    queues: dict[str, Queue],
    now: float,
    day_start: float,
    desks: dict[str, list[str]] | None = None,
) -> list[list[Any]]:
    """One row per station, each followed by a row per desk: those `desks` names (station
    -> desk names, idle ones too) and any other that served today."""
    opened = min((v["arrived_at"] for v in visits if _at(v, "arrived_at")), default=now)
    rows = []
    for station in STATIONS:
        done = [v for v in visits if (_at(v, station.done) or 0) >= day_start]
        if station.name == "observation":  # left observation, not the screened-out's exit
            done = [v for v in done if _at(v, "observation_started_at")]
        queue = queues.get(station.cls, Queue())
        in_service = observing(visits) if station.name == "observation" else queue.in_service
        waiting = 0 if station.name == "observation" else queue.waiting
        rows.append([station.name, waiting, in_service, *_figures(station, done, now), None])
        if station.desk is not None:
            known = (desks or {}).get(station.name, [])
            rows += _desk_rows(station, done, known, now, max(opened, now - HOUR))
    return rows


def _desk_rows(
    station: Station, done: list[dict[str, Any]], known: list[str], now: float, since: float
) -> list[list[Any]]:
    field = station.desk or ""
    desks = sorted({*known, *(str(v[field]) for v in done if v.get(field))}, key=_natural)
    rows = []
    for desk in desks:
        served = [v for v in done if v.get(field) == desk]
        busy = sum(_overlap(v, station, since, now) for v in served)
        share = busy / (now - since) if now > since else None
        rows.append([f"{station.name}/{desk}", None, None, *_figures(station, served, now),
                     None if share is None else round(share, 3)])  # fmt: skip
    return rows


def _figures(station: Station, done: list[dict[str, Any]], now: float) -> list[Any]:
    """done today, per hour, wait mean and p90, service mean and p90."""
    waits = _spans(done, station.queued, station.started or station.done)
    services = _spans(done, station.started, station.done) if station.started else []
    last_hour = sum(1 for v in done if (_at(v, station.done) or 0) >= now - HOUR)
    return [len(done), last_hour, *_mean_p90(waits), *_mean_p90(services)]


def summary_row(
    visits: list[dict[str, Any]], attention: int, now: float, day_start: float
) -> list[Any]:
    """The day at a glance, in `SUMMARY`'s order."""
    today = [v for v in visits if (_at(v, "arrived_at") or 0) >= day_start]
    departed = [v for v in visits if (_at(v, "departed_at") or 0) >= day_start]
    outcomes = [v.get("outcome") for v in departed]
    doses = sum(1 for v in visits if (_at(v, "vaccinated_at") or 0) >= day_start)
    lengths = [v["visit_s"] for v in departed if isinstance(v.get("visit_s"), float)]
    last_hour = sum(1 for v in departed if v["departed_at"] >= now - HOUR)
    in_clinic = sum(1 for v in visits if _at(v, "arrived_at") and not _at(v, "departed_at"))
    return [
        len(today), in_clinic, observing(visits), doses,
        outcomes.count("screened_out"), outcomes.count("referred"), attention,
        *_mean_p90(lengths), last_hour,
    ]  # fmt: skip


def observing(visits: list[dict[str, Any]]) -> int:
    return len(under_observation(visits))


def under_observation(visits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Visits whose observation began and who have not left, soonest to leave first."""
    found = [v for v in visits if _at(v, "observation_started_at") and not _at(v, "departed_at")]
    return sorted(found, key=lambda v: _at(v, "observation_ends_at") or math.inf)


def _at(visit: dict[str, Any], name: str | None) -> float | None:
    value = visit.get(name) if name else None
    return value if isinstance(value, float) else None


def _spans(visits: list[dict[str, Any]], start: str | None, end: str | None) -> list[float]:
    spans = []
    for visit in visits:
        begun, ended = _at(visit, start), _at(visit, end)
        if begun is not None and ended is not None and ended >= begun:
            spans.append(ended - begun)
    return spans


def _mean_p90(values: list[float]) -> list[float | None]:
    """The mean and the 90th percentile (nearest rank), None for no values."""
    if not values:
        return [None, None]
    ordered = sorted(values)
    rank = max(1, math.ceil(0.9 * len(ordered)))
    return [round(sum(ordered) / len(ordered), 3), round(ordered[rank - 1], 3)]


def _overlap(visit: dict[str, Any], station: Station, since: float, now: float) -> float:
    """How much of [since, now] a desk spent on this visit."""
    begun, ended = _at(visit, station.started), _at(visit, station.done)
    if begun is None or ended is None:
        return 0.0
    return max(0.0, min(ended, now) - max(begun, since))


def _natural(name: str) -> tuple[str, int]:
    """desk-2 before desk-10."""
    prefix, _, number = name.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (name, 0)
