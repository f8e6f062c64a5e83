"""The doorbell's and the clinic's actors (the music lake has tests/test_music_lake.py),
called directly with `router.testing.FakeContext`: what each emits and appends for good
events, and how it refuses bad ones. No server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.api import Device, PermanentFailure
from actors.builtin import Forward
from actors.clinic import Arrival, Departure, Monitoring, Reaction, Registration, Vaccination
from actors.doorbell import Detection, OwnerAlert, ReadingSummary, VideoArchive
from router.testing import FakeContext, event

PATIENT = {"patient_id": "p1", "name": "Ada", "birth_date": "1990-05-17", "temperature_c": 36.6}


# --- doorbell ---


async def test_a_button_press_alerts_the_owner_before_it_is_recorded() -> None:
    press = event({"priority": "high", "extra": {"x": 1}}, key="front-door")
    ctx = FakeContext(press)
    await OwnerAlert().handle(press, ctx)
    [alert] = ctx.notified
    assert (alert.kind, alert.device, alert.event_id) == ("ring", "front-door", press.id)
    assert alert.details == {"priority": "high"}  # text and numbers only, nothing nested
    assert ctx.appended_to("doorbell:alerts") == [
        {"event_id": press.id, "device_id": "front-door", "kind": "ring"}
    ]


async def test_a_detection_alerts_as_what_it_is_from_the_devices_own_threshold() -> None:
    actor = Detection(alert_confidence=0.9)
    ctx = FakeContext(
        devices={
            "keen": Device("keen", "ann", settings={"motion_threshold": 0.5}),
            "calm": Device("calm", "bob"),
        }
    )
    seen = [
        event({"confidence": 0.6}, key="keen", topic="doorbell/keen/motion_detected"),
        event({"confidence": 0.6}, key="calm", topic="doorbell/calm/motion_detected"),
        event({"confidence": 0.95}, key="calm", topic="doorbell/calm/sound_detected"),
        event({"confidence": 0.99}, key="nobody", topic="doorbell/nobody/motion_detected"),
        event({"event": "motion_detected", "confidence": 0.7}, key="keen",
              topic="doorbell/keen/events"),
    ]  # fmt: skip
    for detection in seen:
        await actor.handle(detection, ctx)
    assert [(a.kind, a.device) for a in ctx.notified] == [
        ("motion", "keen"), ("sound", "calm"), ("motion", "keen"),
    ]  # fmt: skip
    kinds = [r["kind"] for r in ctx.appended_to("doorbell:detections")]
    assert kinds == ["motion", "motion", "sound", "motion", "motion"]  # every one kept
    assert ctx.emitted == []  # never re-sent as a ring


@pytest.mark.parametrize("confidence", [True, "high", 1.5, -0.1, {"v": 1}])
async def test_a_detection_whose_confidence_is_not_a_probability_fails_permanently(
    confidence: Any,
) -> None:
    bad = event({"confidence": confidence}, key="d1", topic="doorbell/d1/motion_detected")
    ctx = FakeContext(bad)
    with pytest.raises(PermanentFailure, match="confidence"):
        await Detection().handle(bad, ctx)
    assert ctx.emitted == []


async def test_readings_are_summarised_per_device_and_kind_and_a_bad_one_fails_alone() -> None:
    readings = [
        event({"value": 10.0}, key="d1", topic="doorbell/d1/temperature"),
        event({"value": 14.0}, key="d1", topic="doorbell/d1/temperature"),
        event({"value": "warm"}, key="d1", topic="doorbell/d1/temperature"),
        event({"value": 300}, key="d2", topic="doorbell/d2/light"),
    ]
    ctx = FakeContext(readings[0])
    await ReadingSummary().handle_batch(readings, ctx)
    summaries = {(s["device_id"], s["kind"]): s for s in ctx.appended_to("doorbell:readings")}
    assert summaries[("d1", "temperature")] == {
        "device_id": "d1", "kind": "temperature", "count": 2, "min": 10.0, "max": 14.0,
        "mean": 12.0,
    }  # fmt: skip
    assert summaries[("d2", "light")]["count"] == 1
    assert list(ctx.failed) == [readings[2].id]
    assert isinstance(ctx.failed[readings[2].id], PermanentFailure)


async def test_a_clip_is_indexed_and_one_without_an_id_fails_permanently() -> None:
    clip = event({"clip_id": "c1", "duration_s": 12.5, "url": "s3://clips/c1"}, key="d1")
    ctx = FakeContext(clip)
    await VideoArchive().handle(clip, ctx)
    [indexed] = ctx.appended_to("doorbell:videos")
    assert (indexed["clip_id"], indexed["duration_s"], indexed["url"]) == (
        "c1", 12.5, "s3://clips/c1",
    )  # fmt: skip
    for payload in ({}, {"clip_id": ""}, {"clip_id": 7}, {"clip_id": "c", "url": ["x"]}):
        with pytest.raises(PermanentFailure):
            await VideoArchive().handle(event(payload), FakeContext())


# --- clinic (the journeys, the board and the page: tests/test_clinic*.py) ---


async def test_arrival_sends_the_healthy_on_and_screens_out_fever_and_symptoms() -> None:
    healthy = event(PATIENT, key="p1")
    fever = event({**PATIENT, "patient_id": "p2", "temperature_c": 38.9}, key="p2")
    cough = event({**PATIENT, "patient_id": "p3", "symptoms": ["cough"]}, key="p3")
    ctx = FakeContext(healthy)
    await Arrival().handle_batch([healthy, fever, cough], ctx)
    sent = {e.parent.id: (e.target, e.payload.get("outcome")) for e in ctx.emitted}
    assert sent == {
        healthy.id: ("clinic.registration", None),
        fever.id: ("clinic.departure", "screened_out"),
        cough.id: ("clinic.departure", "screened_out"),
    }
    assert {e.payload["visit_id"] for e in ctx.emitted} == {healthy.id, fever.id, cough.id}
    screenings = {ctx.records[f"visit:{e.id}"]["screening"] for e in (healthy, fever, cough)}
    assert screenings == {"passed", "fever", "symptoms"}


@pytest.mark.parametrize(
    "record",
    [
        {"temperature_c": "hot"}, {"temperature_c": True}, {"temperature_c": 10**400 // 10**390},
        {"symptoms": "cough"}, {"patient_id": {"id": 9}}, {"patient_id": True},
        {"patient_id": "x" * 65},
    ],
)  # fmt: skip
async def test_an_arrival_record_that_cannot_be_read_fails_alone(record: dict[str, Any]) -> None:
    good = event(PATIENT, key="p1")
    bad = event({**PATIENT, "patient_id": "p9", **record}, key="p9")
    ctx = FakeContext(good)
    await Arrival().handle_batch([good, bad], ctx)
    assert [e.parent.id for e in ctx.emitted] == [good.id]
    assert list(ctx.failed) == [bad.id]
    assert all(name.endswith(("p1", good.id)) or "day:" in name for name in ctx.records)


async def test_registration_sends_a_complete_patient_to_vaccination_from_a_named_desk() -> None:
    patient = event({**PATIENT, "visit_id": "v1"}, key="p1")
    ctx = FakeContext(patient)
    await Registration(desks=2).handle(patient, ctx)
    [sent] = ctx.emitted
    assert (sent.target, sent.payload["registered"], sent.key) == ("clinic.vaccination", True, "p1")
    visit = ctx.records["visit:v1"]
    assert visit["registration_desk"] == "desk-1"
    assert float(visit["registration_started_at"]) <= float(visit["registered_at"])


@pytest.mark.parametrize(
    ("record", "complaint"),
    [
        ({"name": ""}, "missing name"),
        ({"birth_date": None}, "missing birth_date"),
        ({"birth_date": "17/05/1990"}, "is not a date"),
        ({"name": ["Ada"]}, "must be text"),
    ],
)
async def test_an_incomplete_registration_fails_permanently_with_what_is_wrong(
    record: dict[str, Any], complaint: str
) -> None:
    patient = event({**PATIENT, **record}, key="p1")
    with pytest.raises(PermanentFailure, match=complaint):
        await Registration().handle(patient, FakeContext(patient))


async def test_desks_serve_one_patient_each_and_each_dose_names_its_station() -> None:
    stations = Vaccination(stations=2, nurses=["Ann", "Bea"], lot="L1", service_s=0.05)
    patients = [event({**PATIENT, "visit_id": f"v{n}"}, key=f"p{n}") for n in range(2)]
    contexts = [FakeContext(p) for p in patients]
    await asyncio.gather(*(stations.handle(p, c) for p, c in zip(patients, contexts, strict=True)))
    doses = [c.appended_to("clinic:doses")[0] for c in contexts]
    assert sorted((d["vaccination_station"], d["nurse"]) for d in doses) == [
        ("station-1", "Ann"),
        ("station-2", "Bea"),
    ]  # two at once: two stations, never the same one twice
    assert {d["lot"] for d in doses} == {"L1"}
    assert [c.emitted[0].target for c in contexts] == ["clinic.monitoring"] * 2


async def test_a_third_patient_at_two_stations_is_refused_clearly() -> None:
    stations = Vaccination(stations=2, service_s=0.2)
    patients = [event({**PATIENT, "visit_id": f"v{n}"}, key=f"p{n}") for n in range(3)]
    results = await asyncio.gather(
        *(stations.handle(p, FakeContext(p)) for p in patients), return_exceptions=True
    )
    [refused] = [r for r in results if isinstance(r, Exception)]
    assert "set the class's concurrency to its number of desks" in str(refused)


async def test_monitoring_releases_each_patient_to_departure_after_the_observation_time() -> None:
    patients = [event({**PATIENT, "visit_id": f"v{n}"}, key=f"p{n}") for n in (1, 2)]
    ctx = FakeContext(patients[0])
    await Monitoring(observation_s=900).handle_batch(patients, ctx)
    assert [(e.target, e.delay_s, e.parent.id) for e in ctx.emitted] == [
        ("clinic.departure", 900.0, patients[0].id),
        ("clinic.departure", 900.0, patients[1].id),
    ]
    visit = ctx.records["visit:v1"]
    ends = float(visit["observation_ends_at"]) - float(visit["observation_started_at"])
    assert ends == pytest.approx(900.0)


async def test_departure_closes_the_visit_and_sends_it_to_the_archive() -> None:
    leaving = event({**PATIENT, "visit_id": "v1", "outcome": "vaccinated"}, key="p1")
    ctx = FakeContext(leaving, records={"visit:v1": {"visit_id": "v1", "arrived_at": "100.0"}})
    await Departure().handle(leaving, ctx)
    assert ctx.records["visit:v1"]["outcome"] == "vaccinated"
    [archived] = ctx.emitted
    assert archived.target == "clinic.visits"
    assert archived.payload["departed_at"] == ctx.records["visit:v1"]["departed_at"]


async def test_departure_does_not_release_a_patient_twice() -> None:
    again = event({**PATIENT, "visit_id": "v1", "outcome": "vaccinated"}, key="p1")
    ctx = FakeContext(again, records={"visit:v1": {"departed_at": "100.0"}})
    await Departure().handle(again, ctx)
    assert ctx.emitted == []
    assert ctx.records["visit:v1"] == {"departed_at": "100.0"}


# --- built-in ---


async def test_forward_taps_each_event_into_its_stream() -> None:
    tapped = event({"n": 1}, key="k", cls="things")
    ctx = FakeContext(tapped)
    await Forward(stream="audit").handle(tapped, ctx)
    [entry] = ctx.appended_to("audit")
    assert (entry["id"], entry["class"], entry["key"]) == (tapped.id, "things", "k")


async def test_a_journey_takes_at_most_twenty_reactions() -> None:
    reaction = event({"patient_id": "p1", "severity": "mild"}, key="p1")
    observing = {"observation_started_at": "1.0", "observation_ends_at": "2.0"}
    many = {f"reaction.e{n}": "{}" for n in range(20)}
    ctx = FakeContext(
        reaction, records={"patient:p1": {"visit": "v1"}, "visit:v1": observing | many}
    )
    with pytest.raises(PermanentFailure, match="20 reactions recorded"):
        await Reaction().handle(reaction, ctx)
    ctx.records["visit:v1"] = observing | dict(list(many.items())[:19])
    await Reaction().handle(reaction, ctx)  # the twentieth is kept, the staff told
    assert sum(1 for name in ctx.records["visit:v1"] if name.startswith("reaction.")) == 20
