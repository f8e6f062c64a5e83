"""The demo's clinic day: patients arriving in waves over a compressed day (08:00 to 18:00),
a few with a fever or symptoms, a few with an incomplete registration that the desk corrects
a little later, and now and then a reaction during observation, seen by the nurse.

`SPEEDUP` clinic seconds pass every real second: `make run` shortens the 15-minute
observation, the 3 minutes at a desk and the 5 at a station by the same factor, so the
queues form where a clinic's would.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.streams.records import Records

if TYPE_CHECKING:
    from router.streams.client import RedisClient

SPEEDUP = 45.0  # clinic seconds per real second: 15 minutes of observation in 20 s
OPENS_H, CLOSES_H = 8.0, 18.0
STARTS_H = 8.5  # the demo joins the day as the morning wave builds
# (clinic hour, arrivals per clinic hour), linear in between: a morning and an afternoon wave
WAVES = ((8, 30), (9, 95), (10, 80), (12, 45), (13, 35), (15, 90), (17, 50), (18, 0))
FEVER, SYMPTOMS, INCOMPLETE, REACTION, SEVERE = 0.04, 0.02, 0.03, 0.02, 0.2
CORRECTED_AFTER_S = 15.0  # real seconds before the desk posts the completed record
TICK_S = 0.25

Post = Callable[[str, list[dict[str, Any]]], Awaitable[None]]


def arrivals_per_hour(hour: float) -> float:
    """The wave at a clinic hour (0 outside opening hours)."""
    for (start, low), (end, high) in itertools.pairwise(WAVES):
        if start <= hour < end:
            return low + (high - low) * (hour - start) / (end - start)
    return 0.0


@dataclass(slots=True)
class ClinicDay:
    """The day's patients, as made so far, and what the demo line says of them."""

    random: random.Random = field(default_factory=random.Random)
    started: float = field(default_factory=time.monotonic)
    patients: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("fever", "incomplete", "reaction"), 0)
    )
    watching: dict[str, str] = field(default_factory=dict)  # patient -> severity to come
    corrections: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _carry: float = 1.0  # the first patient at the door as the demo opens
    day: str = ""  # patient ids are this day's own: `make run` keeps yesterday's visits

    def __post_init__(self) -> None:
        self.day = self.day or f"{self.random.getrandbits(16):04x}"

    def hour(self, now: float) -> float:
        """The clinic's hour now: the day runs from OPENS_H to CLOSES_H, then starts again."""
        elapsed_h = STARTS_H - OPENS_H + (now - self.started) * SPEEDUP / 3600
        return OPENS_H + elapsed_h % (CLOSES_H - OPENS_H)

    def clock(self, now: float) -> str:
        hour = self.hour(now)
        return f"{int(hour):02d}:{int(hour % 1 * 60):02d}"

    def arrivals(self, now: float, seconds: float) -> list[dict[str, Any]]:
        """The patients arriving over the last `seconds` (real)."""
        self._carry += arrivals_per_hour(self.hour(now)) / 3600 * SPEEDUP * seconds
        count, self._carry = int(self._carry), self._carry - int(self._carry)
        return [self._patient(now) for _ in range(count)]

    def _patient(self, now: float) -> dict[str, Any]:
        self.patients += 1
        chance = self.random.random
        record: dict[str, Any] = {
            "patient_id": f"C{self.day}-{self.patients:04d}",
            "name": f"Patient {self.patients}",
            "birth_date": f"{self.random.randint(1940, 2008)}-{self.random.randint(1, 12):02d}-"
            f"{self.random.randint(1, 28):02d}",
            "temperature_c": round(self.random.uniform(36.1, 37.4), 1),
            "symptoms": [],
        }
        if self.patients == 1:  # the first one is well, and has a reaction early on
            self.watching[record["patient_id"]] = "mild"
        elif chance() < FEVER:
            record["temperature_c"] = round(self.random.uniform(38.2, 39.6), 1)
            self.counts["fever"] += 1
        elif chance() < SYMPTOMS:
            record["symptoms"] = [self.random.choice(["cough", "sore throat", "rash"])]
            self.counts["fever"] += 1
        elif chance() < INCOMPLETE:  # the form left half done; the desk completes it later
            self.counts["incomplete"] += 1
            self.corrections.append((now + CORRECTED_AFTER_S, dict(record)))
            record[self.random.choice(["name", "birth_date"])] = ""
        elif chance() < REACTION:
            self.watching[record["patient_id"]] = "severe" if chance() < SEVERE else "mild"
        return record

    def corrected(self, now: float) -> list[dict[str, Any]]:
        """The records the desk has completed by now."""
        due = [record for at, record in self.corrections if at <= now]
        self.corrections = [(at, record) for at, record in self.corrections if at > now]
        return due

    def line(self, now: float, board: str) -> str:
        counts = self.counts
        return (
            f"clinic at {self.clock(now)} (a day at x{SPEEDUP:g}): {self.patients} arrived, "
            f"{counts['fever']} screened out at the door, {counts['incomplete']} incomplete "
            f"registrations, {counts['reaction']} reactions; the board: {board}"
        )


async def run_day(day: ClinicDay, post: Post, redis: RedisClient) -> None:
    """Post the day's arrivals, corrections and reactions, for ever."""
    records = Records(redis, "clinic")
    while True:
        now = time.monotonic()
        if arrivals := day.arrivals(now, TICK_S):
            await post("clinic/arrival", arrivals)
        if corrected := day.corrected(now):
            await post("clinic/registration", corrected)
        if day.watching:
            await _react(day, post, records)
        await asyncio.sleep(TICK_S)


async def _react(day: ClinicDay, post: Post, records: Records) -> None:
    """A reaction for each watched patient now under observation (the nurse sees it)."""
    reactions = []
    for patient, severity in list(day.watching.items()):
        visit = (await records.get(f"patient:{patient}")).get("visit")
        journey = await records.get(f"visit:{visit}") if visit else {}
        if "departed_at" in journey:
            del day.watching[patient]  # left before anything showed
        elif "observation_started_at" in journey:
            del day.watching[patient]
            day.counts["reaction"] += 1
            note = "short of breath" if severity == "severe" else "redness at the injection site"
            reactions.append({"patient_id": patient, "severity": severity, "note": note})
    if reactions:
        await post("clinic/reaction", reactions)
