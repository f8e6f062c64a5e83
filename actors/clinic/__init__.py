"""Vaccination-clinic stations; each hands the patient on to the next station by emitting,
and stamps the patient's journey (`journey`) as the patient leaves it.

arrival (batch) -> registration (queue, desks) -> vaccination (stream, stations) ->
monitoring (timed wait) -> departure (stream) -> the visit archive (`archive`, the lake).
A patient screened out at arrival goes straight to departure; a reaction during observation
(`clinic/reaction`, the high lane) pages the staff and extends or ends the observation.

Data that can never pass (a registration without a name, a reaction for a patient who is
not under observation) is a `PermanentFailure`: a dead letter at once, with the reason, for
`switchyard clinic attention` to show and `switchyard dlq replay` to send again once fixed.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from actors.api import Actor, Alert, Context, PermanentFailure
from actors.clinic import journey
from actors.clinic.archive import VisitArchiver as VisitArchiver
from actors.clinic.desks import Desks
from actors.clinic.journey import Step, stamp, step_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.api import Envelope

REQUIRED_REGISTRATION = ("patient_id", "name", "birth_date")
SEVERITIES = ("mild", "moderate", "severe")  # severe: observation ends, the patient referred
MAX_NOTE = 500
MAX_REACTIONS = 20  # per visit: a tablet stuck resending cannot grow a journey without end


class Arrival(Actor):
    """Temperature and symptom check at the single entry; fever or symptoms: no vaccine today."""

    def __init__(self, *, max_temperature_c: float = 38.0, **options: Any) -> None:
        super().__init__(max_temperature_c=max_temperature_c, **options)
        self.max_temperature_c = float(max_temperature_c)

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        for event in events:
            try:
                self._screen(event, ctx)
            except PermanentFailure as exc:  # this patient's record, not the whole group's
                ctx.fail(event, exc)

    def _screen(self, event: Envelope, ctx: Context) -> None:
        patient = event.payload
        step = Step(journey.patient_of(event), event.id, new=True)
        temperature, symptoms = _screening(patient)
        screening = (
            "fever" if temperature > self.max_temperature_c
            else "symptoms" if symptoms
            else "passed"
        )  # fmt: skip
        fields: dict[str, str | int | float] = {
            "arrived_at": journey.arrived(event), "screened_at": time.time(),
            "temperature_c": temperature, "screening": screening,
        }  # fmt: skip
        stamp(ctx, step, fields, parent=event)
        handed_on = {**patient, "visit_id": step.visit}
        if screening == "passed":
            ctx.emit("clinic.registration", {**handed_on, "screened": True}, parent=event)
        else:
            screened_out = {**handed_on, "outcome": "screened_out", "station": "arrival"}
            ctx.emit("clinic.departure", screened_out, parent=event)


def _screening(patient: dict[str, Any]) -> tuple[float, list[Any]]:
    """The temperature (36.6 when not taken) and symptoms of an arrival record."""
    temperature = patient.get("temperature_c", 36.6)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise PermanentFailure(f"temperature_c must be a number, not {temperature!r:.40}")
    if not 25.0 <= temperature <= 45.0:
        raise PermanentFailure(f"temperature_c {temperature!r:.20} is not a body temperature")
    symptoms = patient.get("symptoms") or []
    if not isinstance(symptoms, list):
        raise PermanentFailure(f"symptoms must be a list, not {type(symptoms).__name__}")
    return float(temperature), symptoms


class Registration(Actor):
    """Validates patient data at one of `desks` desks (the class's concurrency); an
    incomplete record is a permanent failure: a dead letter at once, with what is missing,
    for the desk to correct and replay. `service_s` simulates the time a desk takes (the
    demo's compressed day); in a clinic the event comes once the desk is done."""

    def __init__(
        self, *, desks: int | str = 1, service_s: float | str = 0.0, **options: Any
    ) -> None:
        super().__init__(desks=desks, service_s=service_s, **options)
        self.desks = Desks("desk", desks)
        self.service_s = float(service_s)

    async def handle(self, event: Envelope, ctx: Context) -> None:
        patient = event.payload
        _check_registration(patient)
        step = await step_of(event, ctx)
        with self.desks.take() as desk:
            started = time.time()
            await _serve(self.service_s)
            fields: dict[str, str | int | float] = {
                "registration_started_at": started, "registered_at": time.time(),
                "registration_desk": desk,
            }  # fmt: skip
        if step.new:
            fields["arrived_at"] = journey.arrived(event)
        stamp(ctx, step, fields)
        ctx.emit("clinic.vaccination", {**patient, "visit_id": step.visit, "registered": True})


def _check_registration(patient: dict[str, Any]) -> None:
    missing = [name for name in REQUIRED_REGISTRATION if not patient.get(name)]
    if missing:
        raise PermanentFailure(f"registration is missing {', '.join(missing)}")
    if not all(isinstance(patient[name], str) for name in REQUIRED_REGISTRATION):
        raise PermanentFailure(f"{', '.join(REQUIRED_REGISTRATION)} must be text")
    try:
        date.fromisoformat(patient["birth_date"])
    except ValueError:
        raise PermanentFailure(f"birth_date {patient['birth_date']!r:.40} is not a date") from None


async def _serve(seconds: float) -> None:
    """A desk's time with the patient, when simulated."""
    if seconds > 0:
        await asyncio.sleep(seconds)


class Vaccination(Actor):
    """Gives the dose at one of `stations` stations (the class's concurrency), names the
    station, nurse (the event's `nurse`, else the station's in `nurses`), vaccine and lot on
    the journey and in `clinic:doses`, then sends the patient to observation."""

    def __init__(
        self,
        *,
        stations: int | str = 1,
        vaccine: str = "influenza-2026",
        lot: str = "",
        nurses: Sequence[str] = (),
        service_s: float | str = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(
            stations=stations, vaccine=vaccine, lot=lot, nurses=nurses, service_s=service_s,
            **options,
        )  # fmt: skip
        self.stations = Desks("station", stations)
        self.vaccine, self.lot = vaccine, lot
        self.nurses = dict(zip(self.stations.names, nurses, strict=False))
        self.service_s = float(service_s)

    async def handle(self, event: Envelope, ctx: Context) -> None:
        step = await step_of(event, ctx)
        given = _texts(event.payload, "vaccine", "lot", "nurse")
        with self.stations.take() as station:
            started = time.time()
            await _serve(self.service_s)
            dose: dict[str, str | float] = {
                "vaccine": given.get("vaccine", self.vaccine),
                "lot": given.get("lot", self.lot),
                "nurse": given.get("nurse", self.nurses.get(station, "")),
                "vaccination_station": station,
                "vaccination_started_at": started,
                "vaccinated_at": time.time(),
            }
        stamp(ctx, step, dose | ({"arrived_at": journey.arrived(event)} if step.new else {}))
        ctx.append("clinic:doses", {"patient_id": step.patient, "dose_event_id": event.id, **dose})
        ctx.emit("clinic.monitoring", {**event.payload, "visit_id": step.visit})


def _texts(payload: dict[str, Any], *names: str) -> dict[str, str]:
    """The payload's non-empty text fields among `names`, at most 100 characters each."""
    found = {}
    for name in names:
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > 100:
            raise PermanentFailure(f"{name} must be text of 1 to 100 characters")
        found[name] = value
    return found


class Monitoring(Actor):
    """Timed waiting after the shot: each patient is released to departure once their
    observation time (option `observation_s`, 15 minutes by default) has passed.

    The wait is held in the departure class's durable delay queue, not in this process, so a
    restart during observation neither loses nor rushes anybody; a reaction that extends the
    observation moves the end on the journey, and departure waits for it.
    """

    def __init__(self, *, observation_s: float | str = 900.0, **options: Any) -> None:
        super().__init__(observation_s=observation_s, **options)
        self.observation_s = float(observation_s)

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        for event in events:
            try:
                step = await step_of(event, ctx)
            except PermanentFailure as exc:
                ctx.fail(event, exc)
                continue
            started = time.time()
            ends = started + self.observation_s
            stamp(
                ctx, step, {"observation_started_at": started, "observation_ends_at": ends},
                parent=event,
            )  # fmt: skip
            released = {
                "patient_id": step.patient, "visit_id": step.visit,
                "outcome": "vaccinated", "release": "observation",
            }  # fmt: skip
            ctx.emit("clinic.departure", released, parent=event, delay_s=self.observation_s)


class Reaction(Actor):
    """A reaction seen during observation (`clinic/reaction`, from the observation nurse's
    tablet): recorded on the journey, the staff paged (the clinic's registered device
    `pager`, through the notifier), and the observation extended by `extend_s` (mild,
    moderate) or ended, the patient referred (severe). A patient who is not under
    observation is a dead letter saying so."""

    def __init__(
        self, *, pager: str = "observation", extend_s: float | str = 900.0, **options: Any
    ) -> None:
        super().__init__(pager=pager, extend_s=extend_s, **options)
        self.pager = pager
        self.extend_s = float(extend_s)

    async def handle(self, event: Envelope, ctx: Context) -> None:
        patient = journey.patient_of(event)
        severity, note = _reaction(event.payload)
        visit_id = (await ctx.record(f"patient:{patient}")).get("visit", "")
        visit = await ctx.record(f"visit:{visit_id}") if visit_id else {}
        _check_observing(patient, visit)
        if sum(1 for name in visit if name.startswith(journey.REACTION)) >= MAX_REACTIONS:
            raise PermanentFailure(f"patient {patient} has {MAX_REACTIONS} reactions recorded")
        now = time.time()
        ends = now if severity == "severe" else max(_ends(visit), now + self.extend_s)
        reaction = {"at": now, "severity": severity, "note": note, "event_id": event.id}
        step = Step(patient, visit_id, new=False)
        stamp(ctx, step, {f"{journey.REACTION}{event.id}": json.dumps(reaction),
                          "observation_ends_at": ends})  # fmt: skip
        if severity == "severe":
            referred = {"patient_id": patient, "visit_id": visit_id, "outcome": "referred"}
            ctx.emit("clinic.departure", referred)
        await self._page(ctx, event, reaction | {"patient_id": patient, "until": ends})

    async def _page(self, ctx: Context, event: Envelope, details: dict[str, Any]) -> None:
        """Tell the staff; with no pager registered, say so in the log (and record anyway)."""
        if await ctx.device(self.pager) is None:
            ctx.log.error(
                "reaction not paged: no clinic pager registered "
                f"(switchyard clinic pager add {self.pager} --webhook URL)",
                patient_id=details["patient_id"], severity=details["severity"],
            )  # fmt: skip
            return
        await ctx.notify(Alert("reaction", self.pager, event.id, event.ingest_ts, details))


def _reaction(payload: dict[str, Any]) -> tuple[str, str]:
    severity = payload.get("severity", "mild")
    if severity not in SEVERITIES:
        raise PermanentFailure(f"severity must be one of {', '.join(SEVERITIES)}")
    note = payload.get("note", "")
    if not isinstance(note, str):
        raise PermanentFailure(f"note must be text, not {type(note).__name__}")
    return str(severity), note[:MAX_NOTE]


def _check_observing(patient: str, visit: dict[str, str]) -> None:
    if not visit:
        raise PermanentFailure(f"patient {patient} is not under observation: no open visit")
    if visit.get("departed_at"):
        raise PermanentFailure(f"patient {patient} is not under observation: already departed")
    if not visit.get("observation_started_at"):
        raise PermanentFailure(f"patient {patient} is not under observation: not vaccinated yet")


def _ends(visit: dict[str, str]) -> float:
    return journey.number(visit, "observation_ends_at") or 0.0


class Departure(Actor):
    """Logs the patient's exit on the journey, closes the visit and sends it to the archive
    (`archive`, the class `clinic.visits`). A release whose observation a reaction extended
    waits on until the new end; a patient already departed (referred, then the timed
    release) is not released twice."""

    def __init__(self, *, archive: str | None = "clinic.visits", **options: Any) -> None:
        super().__init__(archive=archive, **options)
        self.archive = archive

    async def handle(self, event: Envelope, ctx: Context) -> None:
        step = await step_of(event, ctx)
        visit = await ctx.record(f"visit:{step.visit}")
        if visit.get("departed_at"):
            ctx.log.info("patient already departed", patient_id=step.patient)
            return
        now = time.time()
        if event.payload.get("release") == "observation" and _ends(visit) > now + 0.05:
            ctx.emit("clinic.departure", event.payload, delay_s=_ends(visit) - now)
            return
        outcome = event.payload.get("outcome")
        arrived = journey.number(visit, "arrived_at") or journey.arrived(event)
        closing = {
            "departed_at": now,
            "outcome": outcome if outcome in journey.OUTCOMES else "unknown",
            "visit_s": round(now - arrived, 3),
        }
        if step.new:
            closing["arrived_at"] = arrived
        stamp(ctx, step, closing)
        if self.archive:
            whole = visit | {"visit_id": step.visit, "patient_id": step.patient}
            ctx.emit(self.archive, whole | {k: str(v) for k, v in closing.items()})
