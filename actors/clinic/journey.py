"""A patient's journey through the clinic: one record per visit, stamped at every step.

Each station stamps the visit as the patient leaves it (`stamp`), with the handler's other
outputs, so a step is on the journey exactly when its event is acknowledged. Three records:
- `visit:<visit id>`: the visit's fields (`FIELDS`, plus `reaction.<event id>` per reaction);
- `patient:<patient id>`: the patient's latest visit, for look-ups by patient;
- `day:<YYYY-MM-DD>`: every visit that began that day (UTC), for the board.
A visit's id is its arrival event's id, carried in the payload from station to station. An
event that arrives without one (posted straight to a later station) joins the patient's
open visit, or begins a visit there.

Open visits are kept two days after their last step; closed ones are archived to the lake
(`archive`), where `switchyard clinic patient` finds them later.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from actors.api import PermanentFailure

if TYPE_CHECKING:
    from actors.api import Context, Envelope

KEEP_S = 2 * 86400  # an open visit, after its last step
DAY_KEEP_S = 3 * 86400  # a day's index of visits
MAX_ID = 64  # characters of a patient id
OUTCOMES = ("vaccinated", "screened_out", "referred")

# The journey's timestamps (Unix seconds), in the order a patient meets them.
STEPS = (
    ("arrived_at", "arrived"),
    ("screened_at", "screened"),
    ("registration_started_at", "at a registration desk"),
    ("registered_at", "registered"),
    ("vaccination_started_at", "at a vaccination station"),
    ("vaccinated_at", "vaccinated"),
    ("observation_started_at", "observation started"),
    ("observation_ends_at", "observation ends"),
    ("departed_at", "departed"),
)
TIMES = tuple(name for name, _ in STEPS)
DETAILS = (
    "temperature_c", "screening", "registration_desk", "vaccination_station", "nurse",
    "vaccine", "lot", "outcome", "visit_s",
)  # fmt: skip
FIELDS = ("visit_id", "patient_id", *TIMES, *DETAILS)
NUMBERS = frozenset((*TIMES, "temperature_c", "visit_s"))
REACTION = "reaction."  # a reaction's field: reaction.<event id> -> JSON


def patient_of(event: Envelope) -> str:
    """The patient's id: the event's key (routed from `patient_id`), checked."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    patient = payload.get("patient_id")
    if not isinstance(patient, str) or not patient.strip():
        raise PermanentFailure(f"patient_id must be non-empty text, not {patient!r:.40}")
    if len(patient) > MAX_ID or not patient.isprintable():
        raise PermanentFailure(f"patient_id must be at most {MAX_ID} printable characters")
    return patient


@dataclass(frozen=True, slots=True)
class Step:
    """Where a station's event belongs: the patient, the visit, and whether this event
    begins the visit (no earlier station saw the patient)."""

    patient: str
    visit: str
    new: bool


async def step_of(event: Envelope, ctx: Context) -> Step:
    """The visit `event` is a step of: the payload's `visit_id`, else the patient's open
    visit, else a new one, named after this event."""
    patient = patient_of(event)
    given = event.payload.get("visit_id")
    if isinstance(given, str) and given and len(given) <= MAX_ID:
        return Step(patient, given, new=False)
    current = (await ctx.record(f"patient:{patient}")).get("visit")
    if current and not (await ctx.record(f"visit:{current}")).get("departed_at"):
        return Step(patient, current, new=False)
    return Step(patient, event.id, new=True)


def stamp(
    ctx: Context,
    step: Step,
    fields: dict[str, str | int | float],
    *,
    parent: Envelope | None = None,
) -> None:
    """Set `fields` on the visit; a visit's first step also indexes it by patient and day."""
    ctx.update(
        f"visit:{step.visit}",
        {"visit_id": step.visit, "patient_id": step.patient, **fields},
        keep_s=KEEP_S,
        parent=parent,
    )
    if step.new:
        ctx.update(f"patient:{step.patient}", {"visit": step.visit}, keep_s=KEEP_S, parent=parent)
        day = day_of(float(fields.get("arrived_at", time.time())))
        ctx.update(f"day:{day}", {step.visit: step.patient}, keep_s=DAY_KEEP_S, parent=parent)


def day_of(moment: float) -> str:
    """The UTC date a moment falls on, as the day index names it."""
    return datetime.fromtimestamp(moment, UTC).date().isoformat()


def arrived(event: Envelope) -> float:
    """When the patient reached the clinic: the source's timestamp, else the ingest time."""
    return event.source_ts or event.ingest_ts


def number(fields: dict[str, str], name: str) -> float | None:
    """A journey's number field, or None when it is absent or unreadable."""
    text = fields.get(name)
    try:
        return float(text) if text else None
    except ValueError:
        return None


def read_visit(fields: dict[str, str]) -> dict[str, Any]:
    """A visit record as people read it: its fields with numbers as numbers, and its
    reactions as a list, oldest first."""
    shown: dict[str, Any] = {}
    for name in FIELDS:
        if name in fields:
            value = number(fields, name) if name in NUMBERS else None
            shown[name] = fields[name] if value is None else value
    reactions = [json.loads(v) for k, v in fields.items() if k.startswith(REACTION)]
    shown["reactions"] = sorted(reactions, key=lambda r: r.get("at", 0))
    return shown
