"""Vaccination-clinic stations; each hands the patient on to the next station by emitting.

arrival (batch) -> registration (queue) -> vaccination (stream) -> monitoring (batch)
-> departure (stream). A patient screened out at arrival goes straight to departure.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from actors.api import Actor, Context, PermanentFailure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.api import Envelope

REQUIRED_REGISTRATION = ("patient_id", "name", "birth_date")


class Arrival(Actor):
    """Temperature and symptom check at the single entry; fever or symptoms: no vaccine today."""

    def __init__(self, *, max_temperature_c: float = 38.0, **options: Any) -> None:
        super().__init__(max_temperature_c=max_temperature_c, **options)
        self.max_temperature_c = max_temperature_c

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        for event in events:
            patient = event.payload
            try:
                temperature, symptoms = _screening(patient)
            except PermanentFailure as exc:  # this patient's record, not the whole group's
                ctx.fail(event, exc)
                continue
            if temperature > self.max_temperature_c or symptoms:
                ctx.emit(
                    "clinic.departure",
                    {**patient, "outcome": "screened_out", "station": "arrival"},
                    parent=event,
                )
            else:
                ctx.emit("clinic.registration", {**patient, "screened": True}, parent=event)


def _screening(patient: dict[str, Any]) -> tuple[float, list[Any]]:
    """The temperature (36.6 when not taken) and symptoms of an arrival record."""
    temperature = patient.get("temperature_c", 36.6)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise PermanentFailure(f"temperature_c must be a number, not {temperature!r:.40}")
    symptoms = patient.get("symptoms") or []
    if not isinstance(symptoms, list):
        raise PermanentFailure(f"symptoms must be a list, not {type(symptoms).__name__}")
    return float(temperature), symptoms


class Registration(Actor):
    """Validates patient data; an incomplete record is a permanent failure: a dead letter at
    once, with what is missing, for the desk to correct and replay."""

    async def handle(self, event: Envelope, ctx: Context) -> None:
        patient = event.payload
        missing = [name for name in REQUIRED_REGISTRATION if not patient.get(name)]
        if missing:
            raise PermanentFailure(f"registration is missing {', '.join(missing)}")
        if not all(isinstance(patient[name], str) for name in REQUIRED_REGISTRATION):
            raise PermanentFailure(f"{', '.join(REQUIRED_REGISTRATION)} must be text")
        try:
            date.fromisoformat(patient["birth_date"])
        except ValueError:
            raise PermanentFailure(
                f"birth_date {patient['birth_date']!r:.40} is not a date"
            ) from None
        ctx.emit("clinic.vaccination", {**patient, "registered": True})


class Vaccination(Actor):
    """Records the dose given at a station, then sends the patient to observation."""

    def __init__(self, *, vaccine: str = "influenza-2026", **options: Any) -> None:
        super().__init__(vaccine=vaccine, **options)
        self.vaccine = vaccine

    async def handle(self, event: Envelope, ctx: Context) -> None:
        dose: dict[str, str] = {
            "vaccine": str(event.payload.get("vaccine", self.vaccine)),
            "dose_event_id": event.id,
        }
        ctx.append("clinic:doses", {"patient_id": str(event.key), **dose})
        ctx.emit("clinic.monitoring", {**event.payload, **dose})


class Monitoring(Actor):
    """Timed waiting after the shot: each patient is released to departure once their
    observation time (option `observation_s`, 15 minutes by default) has passed.

    The wait is held in the departure class's durable delay queue, not in this process, so a
    restart during observation neither loses nor rushes anybody.
    """

    def __init__(self, *, observation_s: float | str = 900.0, **options: Any) -> None:
        super().__init__(observation_s=observation_s, **options)
        self.observation_s = float(observation_s)

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        for event in events:
            released = {**event.payload, "outcome": "vaccinated", "observed_s": self.observation_s}
            ctx.emit("clinic.departure", released, parent=event, delay_s=self.observation_s)


class Departure(Actor):
    """Logs the patient's exit to the clinic's visit log."""

    async def handle(self, event: Envelope, ctx: Context) -> None:
        ctx.append(
            "clinic:visits",
            {
                "patient_id": str(event.key),
                "outcome": str(event.payload.get("outcome", "unknown")),
                "event_id": event.id,
            },
        )
