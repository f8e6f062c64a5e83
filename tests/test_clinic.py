"""The vaccination clinic end to end, on the repository's config.yaml against a real Redis:
a patient's whole journey, a screen-out, an incomplete registration that needs attention
(never retried), reactions during observation and outside it, the look-ups (HTTP and
`switchyard clinic`), the Prometheus gauges, and a SIGKILL during observation."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.dataset as ds
import pytest
from helpers import events_url, processed, sample, scraped, stream_entries
from servers import ServiceProcess, free_port, wait_for, webhook_receiver

from actors.clinic.archive import visits_lake
from router.cli import main as switchyard
from router.config import load_config
from router.notify.device import Device
from router.notify.registry import Registry
from router.streams import keys
from router.streams.client import connect
from router.streams.envelope import Envelope
from router.streams.records import Records

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp
    from helpers import Serve
    from redis.asyncio import Redis

    from router.config import Config
    from router.notify.receiver import WebhookReceiver
    from router.service.service import Service
    from router.streams.client import RedisClient

REPO = Path(__file__).parent.parent
STEPS = (
    "arrived_at", "screened_at", "registration_started_at", "registered_at",
    "vaccination_started_at", "vaccinated_at", "observation_started_at", "observation_ends_at",
    "departed_at",
)  # fmt: skip
SECRET = "clinic-test-secret"


def patient(number: int, **fields: Any) -> dict[str, Any]:
    return {"patient_id": f"P{number}", "name": f"Patient {number}", "birth_date": "1980-05-17",
            "temperature_c": 36.7, **fields}  # fmt: skip


@pytest.fixture
def clinic_env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path
) -> Callable[[float], Config]:
    """The repository's config on the test's Redis, with an observation of `seconds`."""

    def load(observation_s: float) -> Config:
        env = {
            "SWITCHYARD_REDIS_URL": redis_url, "SWITCHYARD_HTTP_PORT": "0",
            "SWITCHYARD_MQTT_URL": "off", "SWITCHYARD_HIGH_LANE_WORKERS": "0",
            "SWITCHYARD_CLINIC_OBSERVATION_S": str(observation_s),
            "SWITCHYARD_CLINIC_LAKE": str(tmp_path / "clinic"),
            "SWITCHYARD_MUSIC_LAKE": str(tmp_path / "music"),
            "SWITCHYARD_DOORBELL_LAKE": str(tmp_path / "doorbell"),
            "SWITCHYARD_MEDIA_STORE": str(tmp_path / "media"),
            "SWITCHYARD_WEBHOOK_SECRET": SECRET,
        }  # fmt: skip
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return load_config(REPO / "config.yaml")

    return load


@pytest.fixture
def clinic(serve: Serve, clinic_env: Callable[[float], Config]) -> Clinic:
    """`async with clinic(observation_s) as service:` the repository's config, served."""
    return lambda observation_s: serve(clinic_env(observation_s))


Clinic = Callable[[float], Any]


async def arrive(http: aiohttp.ClientSession, service: Service, *patients: dict[str, Any]) -> None:
    async with http.post(events_url(service, "clinic/arrival"), json=list(patients)) as response:
        assert response.status == 202, await response.text()


async def post(http: aiohttp.ClientSession, service: Service, topic: str, body: Any) -> None:
    async with http.post(events_url(service, topic), json=body) as response:
        assert response.status == 202, await response.text()


async def visit(redis: RedisClient, patient_id: str) -> dict[str, str]:
    """The patient's latest visit record ({} before the first step is acknowledged)."""
    records = Records(redis, "clinic")
    current = (await records.get(f"patient:{patient_id}")).get("visit")
    return await records.get(f"visit:{current}") if current else {}


async def departed(redis: RedisClient, patient_id: str) -> dict[str, str]:
    found = await visit(redis, patient_id)
    return found if "departed_at" in found else {}


async def dead_letters(redis: Redis, cls: str, at_least: int = 1) -> list[dict[str, bytes]]:
    """The class's dead letters, once there are `at_least` (before: none)."""
    letters = await stream_entries(redis, keys.dead_letters(cls))
    return letters if len(letters) >= at_least else []


async def ask(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`switchyard <argv> --config config.yaml`, as a user runs it: (exit code, stdout)."""
    capsys.readouterr()
    code = await asyncio.to_thread(switchyard, [*argv, "--config", str(REPO / "config.yaml")])
    return code, capsys.readouterr().out


# --- one patient, every step ---


async def test_one_patients_whole_journey_is_stamped_at_every_step(
    clinic: Clinic, redis: Redis,
    http: aiohttp.ClientSession, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    async with clinic(0.3) as service:
        await arrive(http, service, patient(1))
        journey = await wait_for(lambda: departed(redis, "P1"), timeout=15)
        times = [float(journey[step]) for step in STEPS]
        assert times == sorted(times), dict(zip(STEPS, times, strict=True))
        assert float(journey["observation_ends_at"]) - float(
            journey["observation_started_at"]
        ) == pytest.approx(0.3, abs=0.01)
        assert journey["outcome"] == "vaccinated"
        assert journey["registration_desk"] == "desk-1"
        assert journey["vaccination_station"] == "station-1"
        assert (journey["nurse"], journey["vaccine"], journey["lot"]) == (
            "A. Okafor", "influenza-2026", "FL26-0412",
        )  # fmt: skip
        length = float(journey["departed_at"]) - float(journey["arrived_at"])
        assert float(journey["visit_s"]) == pytest.approx(length, abs=0.01)
        [row] = await wait_for(lambda: visit_rows(tmp_path / "clinic"), timeout=15)
        assert (row["visit_id"], row["patient_id"], row["outcome"]) == (
            journey["visit_id"], "P1", "vaccinated",
        )  # fmt: skip

        url = f"http://127.0.0.1:{service.http_port}/clinic/patients/P1"
        async with http.get(url) as response:
            assert response.status == 200
            steps = [r[1] for r in (await response.json())["rows"]]
        assert (steps[0], steps[-1]) == ("arrived", "departed")
        assert "vaccinated" in steps
        async with http.get(url.replace("P1", "P404")) as response:
            assert response.status == 400
            assert "no visit of patient 'P404'" in (await response.json())["error"]

        code, shown = await ask(capsys, "clinic", "patient", "P1")
        assert code == 0
        assert "vaccination_station=station-1, nurse=A. Okafor" in shown
        assert "outcome=vaccinated" in shown

        metrics = await wait_for(
            lambda: _clinic_gauge(http, service, "arrival", "done_today"), timeout=10
        )
        assert metrics == 1.0


async def _clinic_gauge(
    http: aiohttp.ClientSession, service: Service, station: str, state: str
) -> float | None:
    labels = {"station": station, "state": state}
    return await scraped(http, service, "switchyard_clinic_patients", labels) or None


def visit_rows(lake: Path) -> list[dict[str, Any]]:
    """The visit archive's rows."""
    archive = visits_lake(str(lake))
    paths = archive.segments()
    if not paths:
        return []
    table = ds.dataset(paths, schema=archive.schema, filesystem=archive.fs).to_table()
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


async def test_journeys_on_a_redis_cluster(
    clinic_env: Callable[[float], Config], serve: Serve, cluster_url: str,
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A visit's records share a hash tag: one slot, whatever node it lands on."""
    clinic_env(0.2)
    monkeypatch.setenv("SWITCHYARD_REDIS_URL", cluster_url)
    cluster = connect(cluster_url)
    try:
        async with serve(load_config(REPO / "config.yaml")) as service:
            await arrive(http, service, patient(31), patient(32, temperature_c=38.9))
            vaccinated = await wait_for(lambda: departed(cluster, "P31"), timeout=20)
            screened_out = await wait_for(lambda: departed(cluster, "P32"), timeout=20)
    finally:
        await cluster.aclose()
    assert (vaccinated["outcome"], screened_out["outcome"]) == ("vaccinated", "screened_out")
    assert vaccinated["vaccination_station"] == "station-1"


# --- arrival: screened out ---


async def test_a_patient_with_a_fever_or_symptoms_is_screened_out_and_leaves(
    clinic: Clinic, redis: Redis,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    async with clinic(0.2) as service:
        await arrive(http, service, patient(2, temperature_c=39.1),
                     patient(3, symptoms=["cough"]), patient(4))  # fmt: skip
        fever = await wait_for(lambda: departed(redis, "P2"), timeout=15)
        cough = await wait_for(lambda: departed(redis, "P3"), timeout=15)
        await wait_for(lambda: departed(redis, "P4"), timeout=15)
    assert (fever["screening"], fever["outcome"]) == ("fever", "screened_out")
    assert (cough["screening"], cough["outcome"]) == ("symptoms", "screened_out")
    for left in (fever, cough):
        assert "registered_at" not in left
        assert "vaccinated_at" not in left
        assert float(left["screened_at"]) <= float(left["departed_at"])
    assert processed(service, "clinic.registration") == 1  # only P4 went on


async def test_a_hostile_arrival_record_fails_alone_in_its_group(
    clinic: Clinic, redis: Redis,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    async with clinic(0.2) as service:
        await arrive(http, service, patient(5), patient(6, temperature_c=True),
                     patient(7, temperature_c=1e300), patient(8, symptoms={"a": 1}))  # fmt: skip
        await wait_for(lambda: departed(redis, "P5"), timeout=15)
        letters = await wait_for(lambda: dead_letters(redis, "clinic.arrival", 3), timeout=10)
        async with http.get(f"http://127.0.0.1:{service.http_port}/healthz") as response:
            assert response.status == 200  # the service is still up
    errors = sorted(fields["error"].decode() for fields in letters)
    assert any("temperature_c must be a number, not True" in e for e in errors)
    assert any("is not a body temperature" in e for e in errors)
    assert any("symptoms must be a list, not dict" in e for e in errors)


# --- registration: needs attention, never retried ---


async def test_an_incomplete_registration_needs_attention_at_once_and_a_fix_resumes_the_visit(
    clinic: Clinic, redis: Redis,
    http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    async with clinic(0.2) as service:
        await arrive(http, service, patient(9, name=""))
        [letter] = await wait_for(lambda: dead_letters(redis, "clinic.registration"), timeout=10)
        assert letter["error"].decode().endswith("registration is missing name")
        assert letter["attempts"] == b"1"  # no retries: it could never pass
        assert sample(service, "switchyard_retries_total", {"class": "clinic.registration"}) == 0
        assert await redis.zcard(keys.delayed("clinic.registration")) == 0

        code, shown = await ask(capsys, "clinic", "attention", "--format", "json")
        assert code == 0
        [row] = json.loads(shown)["rows"]
        assert row[:3] == ["P9", "registration", "registration is missing name"]
        assert row[3] is not None  # since when

        # The desk completes the record: the patient's open visit goes on from registration.
        opened = await visit(redis, "P9")
        await post(http, service, "clinic/registration", patient(9))
        resumed = await wait_for(lambda: departed(redis, "P9"), timeout=15)
    assert resumed["visit_id"] == opened["visit_id"]
    assert resumed["arrived_at"] == opened["arrived_at"]
    assert resumed["outcome"] == "vaccinated"
    code, shown = await ask(capsys, "clinic", "attention", "--format", "json")
    assert json.loads(shown)["rows"] == []  # resolved: the dead letter stays, for the record
    assert len(await dead_letters(redis, "clinic.registration")) == 1


# --- reactions ---


@pytest.fixture
async def pager() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """The observation desk's pager: a webhook receiver on a port of its own."""
    async with webhook_receiver(SECRET) as made:
        yield made


async def test_a_reaction_during_observation_pages_staff_and_extends_or_ends_it(
    clinic: Clinic, redis: Redis,
    http: aiohttp.ClientSession, pager: tuple[WebhookReceiver, str],
) -> None:  # fmt: skip
    receiver, url = pager
    await Registry(redis, "clinic").add(Device("observation", "observation nurse", webhook=url))
    async with clinic(2.0) as service:
        await arrive(http, service, patient(10), patient(11))
        for number in (10, 11):
            await wait_for(functools.partial(_observing, redis, f"P{number}"), timeout=15)
        before = float((await visit(redis, "P10"))["observation_ends_at"])
        reactions = [
            {"patient_id": "P10", "severity": "mild", "note": "rash on the arm"},
            {"patient_id": "P11", "severity": "severe", "note": "short of breath"},
        ]
        await post(http, service, "clinic/reaction", reactions)
        referred = await wait_for(lambda: departed(redis, "P11"), timeout=10)
        await wait_for(lambda: len(receiver.alerts) == 2, timeout=10)
        extended = await visit(redis, "P10")
        # P11's timed release was due before P10's extended one: once P10 has left, P11's
        # release has come too, and found P11 gone.
        await wait_for(lambda: departed(redis, "P10"), timeout=15)
        await wait_for(lambda: closings(redis, "P10"), timeout=10)
    assert referred["outcome"] == "referred"
    [reaction] = [json.loads(v) for k, v in extended.items() if k.startswith("reaction.")]
    assert (reaction["severity"], reaction["note"]) == ("mild", "rash on the arm")
    ends = float(extended["observation_ends_at"])  # observed extend_s (2 s here) from then on
    assert ends == pytest.approx(max(before, reaction["at"] + 2.0), abs=0.01)
    assert sorted((a["kind"], a["details"]["patient_id"]) for a in receiver.alerts) == [
        ("reaction", "P10"), ("reaction", "P11"),
    ]  # fmt: skip
    assert await closings(redis, "P11") == 1  # referred, then the timed release: closed once
    assert await closings(redis, "P10") == 1


async def closings(redis: Redis, patient_id: str) -> int:
    """How many times the patient's visits were closed (sent to the archive)."""
    entries = await stream_entries(redis, keys.stream("clinic.visits"))
    closed = [Envelope.decode(entry["e"]).payload for entry in entries]
    return sum(1 for visit in closed if visit.get("patient_id") == patient_id)


async def _observing(redis: Redis, patient_id: str) -> bool:
    found = await visit(redis, patient_id)
    return "observation_started_at" in found and "departed_at" not in found


async def test_a_reaction_for_a_patient_not_under_observation_is_a_clear_dead_letter(
    clinic: Clinic, redis: Redis,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    async with clinic(0.2) as service:
        await arrive(http, service, patient(12))
        await wait_for(lambda: departed(redis, "P12"), timeout=15)
        await post(http, service, "clinic/reaction", [
            {"patient_id": "P12", "severity": "mild"}, {"patient_id": "P404"},
            {"patient_id": "P12", "severity": "catastrophic"},
        ])  # fmt: skip
        letters = await wait_for(lambda: dead_letters(redis, "clinic.reaction", 3), timeout=10)
    errors = sorted(fields["error"].decode().split(": ", 1)[1] for fields in letters)
    assert errors == [
        "patient P12 is not under observation: already departed",
        "patient P404 is not under observation: no open visit",
        "severity must be one of mild, moderate, severe",
    ]
    assert all(fields["attempts"] == b"1" for fields in letters)


# --- a SIGKILL during observation ---


@pytest.mark.timeout(90)
async def test_a_sigkill_during_observation_loses_rushes_and_doubles_nobody(
    clinic_env: Callable[[float], Config], redis: Redis, http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    port = free_port()
    clinic_env(4.0)
    monkeypatch.setenv("SWITCHYARD_HTTP_PORT", str(port))
    monkeypatch.setenv("SWITCHYARD_LOG_FORMAT", "json")
    service = ServiceProcess(REPO / "config.yaml", cwd=tmp_path)
    patients = [patient(n) for n in range(20, 30)]
    try:
        await service.start()
        await wait_for(lambda: _healthy(http, port), timeout=20)
        async with http.post(f"http://127.0.0.1:{port}/events/clinic/arrival", json=patients) as r:
            assert r.status == 202
        for number in range(20, 30):
            await wait_for(functools.partial(_observing, redis, f"P{number}"), timeout=20)
        await service.kill()  # every patient is under observation, their release in Redis
        await service.start()
        await wait_for(lambda: _healthy(http, port), timeout=20)
        visits = [
            await wait_for(functools.partial(departed, redis, f"P{number}"), timeout=30)
            for number in range(20, 30)
        ]
        assert await service.terminate() == 0
    finally:
        await service.close()
    for closed in visits:
        assert closed["outcome"] == "vaccinated"
        assert float(closed["departed_at"]) >= float(closed["observation_ends_at"])  # not early
    # each released once: one closing event per visit (a repeat would be a new id)
    assert await redis.xlen(keys.stream("clinic.visits")) == 10
    for cls in ("clinic.monitoring", "clinic.departure", "clinic.visits"):
        assert await redis.xlen(keys.dead_letters(cls)) == 0


async def _healthy(http: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status == 200
    except OSError:
        return False
