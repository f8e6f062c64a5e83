"""The service end to end over HTTP, against a real redis-server.

Ingress (JSON, msgpack, batches, refusals, unrouted events), the metrics and read-only views,
drain on stop, and the repository's own config.yaml driving the three workloads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack
import pytest
from actors_for_tests import Probe, probe
from aiohttp import web
from conftest import REPO_WEBHOOK_SECRET
from helpers import THINGS, Serve, lake_rows, post_events, processed, sample, stream_entries
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from servers import free_port, wait_for

from router.config import Config, parse_config
from router.notify.device import Device
from router.notify.receiver import WebhookReceiver
from router.service.service import Service
from router.streams import keys
from router.streams.envelope import Envelope
from router.streams.records import Records

if TYPE_CHECKING:
    import aiohttp

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("probes")]

REPO = Path(__file__).resolve().parent.parent


def make_config(redis_url: str, body: str = THINGS, service: str = "") -> Config:
    """A config on the test's Redis, a free HTTP port and quick reads, plus `body`."""
    header = f"""
service: {{drain_timeout_s: 10{", " + service if service else ""}}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
lanes: [{{name: high}}, {{name: low}}]
"""
    return parse_config(header + body)


def base_url(service: Service) -> str:
    return f"http://127.0.0.1:{service.http_port}"


def rejected(service: Service, reason: str) -> float:
    return sample(service, "switchyard_events_rejected_total", {"reason": reason})


# --- accepting events ---


async def test_one_json_object_is_accepted_with_its_id_and_class(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    async with serve(make_config(redis_url)) as service:
        status, reply = await post_events(http, service, "things/1", {"key": "k1", "n": 1})

        assert status == 202
        [accepted] = reply["accepted"]
        assert accepted["class"] == "things"
        assert isinstance(accepted["id"], str)
        assert accepted["id"]
        assert "unrouted" not in accepted
        await wait_for(lambda: probe("things").handled_ids() == [accepted["id"]])


async def test_a_json_array_is_a_batch_and_every_id_is_returned(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    events = [{"key": f"k{n}", "n": n} for n in range(5)]
    async with serve(make_config(redis_url)) as service:
        status, reply = await post_events(http, service, "things/1", events)

        assert status == 202
        ids = [a["id"] for a in reply["accepted"]]
        assert len(ids) == len(set(ids)) == 5
        assert {a["class"] for a in reply["accepted"]} == {"things"}
        await wait_for(lambda: sorted(probe("things").handled_ids()) == sorted(ids))
        by_id = {e.id: e.payload["n"] for e in probe("things").handled}
        assert [by_id[i] for i in ids] == [0, 1, 2, 3, 4]


async def test_a_msgpack_body_is_accepted_like_json(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    payload = {"key": "k1", "blob": b"\x00\x01", "n": 7}
    async with serve(make_config(redis_url)) as service:
        status, reply = await post_events(
            http, service, "things/1", msgpack.packb(payload), content_type="application/msgpack"
        )

        assert status == 202
        [accepted] = reply["accepted"]
        assert accepted["class"] == "things"
        await wait_for(lambda: len(probe("things").handled) == 1)
        [event] = probe("things").handled
        assert event.id == accepted["id"]
        assert event.payload == payload


async def test_a_source_supplied_event_id_is_kept_as_the_id(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    async with serve(make_config(redis_url)) as service:
        status, reply = await post_events(
            http, service, "things/1", {"event_id": "device-42-0001", "key": "k"}
        )

        assert status == 202
        assert reply["accepted"] == [{"id": "device-42-0001", "class": "things"}]
        await wait_for(lambda: probe("things").handled_ids() == ["device-42-0001"])


async def test_the_event_reaches_its_actor_with_payload_key_and_topic_intact(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    payload = {"key": "user-9", "nested": {"list": [1, 2.5, "x", None]}, "unicode": "é✓"}
    async with serve(make_config(redis_url)) as service:
        _, reply = await post_events(http, service, "things/abc", payload)

        await wait_for(lambda: len(probe("things").handled) == 1)
        [event] = probe("things").handled
        assert event.id == reply["accepted"][0]["id"]
        assert event.cls == "things"
        assert event.payload == payload
        assert event.key == "user-9"
        assert event.topic == "things/abc"
        assert event.source == "http"
        assert event.lane == "high"


# --- refusals ---


async def test_bad_json_is_refused_with_400_and_the_reason(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:
    async with serve(make_config(redis_url)) as service:
        status, reply = await post_events(http, service, "things/1", b'{"key": "k", oops')

        assert status == 400
        assert "JSON" in reply["error"]
        assert rejected(service, "decode_error") == 1
        assert await redis.xlen(keys.stream("things")) == 0

        status, reply = await post_events(http, service, "things/1", {"key": "k"})
        assert status == 202
        await wait_for(lambda: probe("things").handled_ids() == [reply["accepted"][0]["id"]])


async def test_an_array_of_numbers_is_refused_with_422_naming_each_event(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:
    async with serve(make_config(redis_url)) as service:
        status, reply = await post_events(http, service, "things/1", [1, 2, 3])

        assert status == 422
        assert "not an object" in reply["error"]
        assert [e["index"] for e in reply["events"]] == [0, 1, 2]
        assert {e["reason"] for e in reply["events"]} == {"invalid"}
        assert rejected(service, "invalid") == 3
        assert rejected(service, "decode_error") == 0
        assert await redis.xlen(keys.stream("things")) == 0

        status, reply = await post_events(http, service, "things/1", {"key": "k"})
        assert status == 202
        await wait_for(lambda: probe("things").handled_ids() == [reply["accepted"][0]["id"]])


async def test_an_event_over_max_event_bytes_is_refused_with_413(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:
    config = make_config(redis_url, service="max_event_bytes: 1024")
    async with serve(config) as service:
        assert service.ingest.max_event_bytes == 1024
        status, reply = await post_events(
            http, service, "things/1", {"key": "k", "blob": "x" * 2000}
        )

        assert status == 413
        assert "1024" in reply["error"]
        assert rejected(service, "too_large") == 1
        assert await redis.xlen(keys.stream("things")) == 0

        status, reply = await post_events(
            http, service, "things/1", {"key": "k", "blob": "x" * 100}
        )
        assert status == 202
        await wait_for(lambda: probe("things").handled_ids() == [reply["accepted"][0]["id"]])


async def test_a_batch_with_one_event_too_large_writes_none_of_it(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:
    config = make_config(redis_url, service="max_event_bytes: 1024")
    async with serve(config) as service:
        batch = [{"key": "a"}, {"key": "b", "blob": "x" * 2000}, {"key": "c"}]
        status, reply = await post_events(http, service, "things/1", batch)

        assert status == 413
        assert "event 1" in reply["error"]
        assert await redis.xlen(keys.stream("things")) == 0
        assert (
            sample(
                service, "switchyard_events_ingested_total", {"class": "things", "source": "http"}
            )
            == 0
        )
        assert probes == {}


async def test_an_unrouted_event_over_max_event_bytes_is_refused_with_413_too(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """The size limit protects Redis whatever the topic: an unrouted event is stored too."""
    config = make_config(redis_url, service="max_event_bytes: 1024")
    async with serve(config) as service:
        status, _ = await post_events(http, service, "nobody/listens", {"blob": "x" * 100_000})

        assert status == 413
        assert rejected(service, "too_large") == 1
        assert await redis.xlen(keys.unrouted()) == 0


# --- unrouted events ---


async def test_an_unrouted_event_is_accepted_counted_and_kept(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    payload = {"key": "k", "value": [1, 2]}
    async with serve(make_config(redis_url)) as service:
        status, reply = await post_events(http, service, "nobody/listens/here", payload)

        assert status == 202
        [accepted] = reply["accepted"]
        assert accepted["unrouted"] is True
        assert accepted["class"] is None
        assert rejected(service, "unrouted") == 1

        [fields] = await stream_entries(redis, keys.unrouted())
        assert fields["id"].decode() == accepted["id"]
        assert fields["topic"] == b"nobody/listens/here"
        assert fields["source"] == b"http"
        assert fields["reason"] == b"unrouted"
        assert msgpack.unpackb(fields["payload"]) == payload


async def test_a_batch_mixing_routed_and_unrouted_events_keeps_both(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:
    config = make_config(
        redis_url,
        THINGS.replace("    key: key\n", "    key: key\n    match: {kind: {equals: thing}}\n"),
    )
    async with serve(config) as service:
        status, reply = await post_events(
            http, service, "things/1", [{"kind": "thing", "key": "a"}, {"kind": "other"}]
        )

        assert status == 202
        routed, unrouted = reply["accepted"]
        assert routed["class"] == "things"
        assert unrouted["unrouted"] is True
        await wait_for(lambda: probe("things").handled_ids() == [routed["id"]])
        [fields] = await stream_entries(redis, keys.unrouted())
        assert fields["id"].decode() == unrouted["id"]
        assert msgpack.unpackb(fields["payload"]) == {"kind": "other"}


# --- metrics and views ---


async def test_metrics_count_every_event_from_ingest_to_ack(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    count = 6
    async with serve(make_config(redis_url)) as service:
        for n in range(count):
            status, _ = await post_events(http, service, "things/1", {"key": f"k{n}"})
            assert status == 202

        await wait_for(lambda: processed(service, "things") == count)
        labels = {"class": "things", "source": "http"}
        assert sample(service, "switchyard_events_ingested_total", labels) == count
        latency = {"class": "things", "lane": "high"}
        assert sample(service, "switchyard_event_latency_seconds_count", latency) == count
        assert sample(service, "switchyard_queue_wait_seconds_count", latency) == count
        assert sample(service, "switchyard_handler_seconds_count", {"class": "things"}) == count
        assert sample(service, "switchyard_inflight", {"class": "things"}) == 0
        assert processed(service, "things", "dead") == 0
        assert len(probe("things").handled) == count


async def test_get_metrics_serves_prometheus_text_with_the_class_label(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    async with serve(make_config(redis_url)) as service:
        await post_events(http, service, "things/1", {"key": "k"})
        await wait_for(lambda: len(probe("things").handled) == 1)
        await wait_for(lambda: processed(service, "things") == 1)

        async with http.get(f"{base_url(service)}/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            text = await response.text()

    assert 'switchyard_events_ingested_total{class="things",source="http"} 1.0' in text
    assert 'switchyard_events_processed_total{class="things",outcome="ok"} 1.0' in text
    assert 'switchyard_event_latency_seconds_count{class="things",lane="high"} 1.0' in text


async def test_get_classes_lists_every_class_with_its_settings_and_figures(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    body = (
        THINGS
        + """
  slow:
    lane: low
    actor: actors_for_tests:Recorder
    mode: batch
    concurrency: 2
    batch: {max_size: 10, max_wait_ms: 50}
    options: {name: slow}
"""
    )
    probes_things = probe("things")
    probes_things.gate.clear()
    async with serve(make_config(redis_url, body)) as service:
        for _ in range(2):
            await post_events(http, service, "things/1", {"key": "k"})
        await wait_for(lambda: probes_things.active == 2)

        async with http.get(f"{base_url(service)}/classes") as response:
            assert response.status == 200
            views = await response.json()
        probes_things.gate.set()

    assert set(views) == {"things", "slow"}
    things = views["things"]
    assert (things["lane"], things["mode"], things["concurrency"]) == ("high", "queue", 4)
    assert (things["stream_length"], things["pending"], things["inflight"]) == (2, 2, 2)
    slow = views["slow"]
    assert (slow["lane"], slow["mode"], slow["concurrency"]) == ("low", "batch", 2)
    assert (slow["stream_length"], slow["pending"], slow["inflight"]) == (0, 0, 0)


async def test_healthz_and_readyz_answer_200_when_redis_is_up(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serve(make_config(redis_url)) as service:
        async with http.get(f"{base_url(service)}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        await wait_for(lambda: all(pool.running for pool in service.pools.values()))
        async with http.get(f"{base_url(service)}/readyz") as response:
            assert response.status == 200
            config = {"hash": service.config_hash, "generation": 1}  # which file it runs
            assert await response.json() == {"ready": True, "problems": [], "config": config}


# --- drain ---


async def test_stop_waits_for_in_flight_handlers_and_acknowledges_them(
    serve: Serve,
    redis_url: str,
    redis: Redis,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    things = probe("things")
    things.gate.clear()
    async with serve(make_config(redis_url)) as service:
        _, reply = await post_events(
            http, service, "things/1", [{"key": f"k{n}"} for n in range(3)]
        )
        ids = [accepted["id"] for accepted in reply["accepted"]]
        await wait_for(lambda: things.active == 3)

        # A spy on the pool's stop(): the service calls it once ingress is closed, right
        # before it waits for in-flight work. Only then are the handlers let go.
        pool = service.pools["things"]
        stop_requested = asyncio.Event()
        original_stop = pool.stop

        def spy() -> None:
            stop_requested.set()
            original_stop()

        monkeypatch.setattr(pool, "stop", spy)
        in_flight_at_stop: list[int] = []

        async def release_once_stopping() -> None:
            await stop_requested.wait()
            in_flight_at_stop.append(things.active)
            things.gate.set()

        releaser = asyncio.create_task(release_once_stopping())
        await asyncio.wait_for(service.stop(), timeout=10)
        await releaser

        assert in_flight_at_stop == [3]
        assert sorted(things.handled_ids()) == sorted(ids)
        pending = await redis.xpending(keys.stream("things"), "switchyard")
        assert pending["pending"] == 0
        assert processed(service, "things", "ok") == 3


async def _other_clients(redis: Redis) -> int:
    """Connections to the server other than the test's own client."""
    own = await redis.client_id()
    return sum(1 for client in await redis.client_list() if int(client["id"]) != own)


async def test_stop_closes_every_connection_to_redis(
    redis_url: str, redis: Redis, http: aiohttp.ClientSession, probes: dict[str, Probe]
) -> None:
    service = Service(make_config(redis_url), registry=CollectorRegistry())
    try:
        async with service:
            await post_events(http, service, "things/1", {"key": "k"})
            await wait_for(lambda: len(probe("things").handled) == 1)
            assert await _other_clients(redis) > 0

        async def none_left() -> bool:
            return await _other_clients(redis) == 0

        await wait_for(
            none_left, timeout=1.0, message="every service connection to close after stop()"
        )
    finally:
        assert isinstance(service.redis, Redis)
        await service.redis.connection_pool.aclose()  # so a leak cannot fail a later test


# --- the repository's config.yaml ---


async def _entries(redis: Redis, stream: str) -> list[dict[str, str]]:
    """The entries of `stream` as text, for streams that the actors write text to."""
    return [
        {name: value.decode(errors="replace") for name, value in fields.items()}
        for fields in await stream_entries(redis, stream)
    ]


async def test_repo_config_routes_a_music_interaction_to_its_class_and_the_lake(
    serve: Serve, repo_config: Config, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    event = {"user_id": 10, "action": "skip_song", "timestamp": "2025-10-27T14:03:00"}
    async with serve(repo_config) as service:
        assert service.http_port != 0
        status, reply = await post_events(http, service, "music/10/events", event)

        assert status == 202
        [accepted] = reply["accepted"]
        assert accepted["class"] == "music.interactions"
        [logged] = await wait_for(lambda: lake_rows(tmp_path / "lake"), timeout=10)
        assert logged["event_id"] == accepted["id"]
        assert (logged["user_id"], logged["action"]) == ("10", "skip_song")
        assert logged["ts"].isoformat() == "2025-10-27T14:03:00+00:00"


async def test_repo_config_routes_doorbell_presses_and_readings_by_topic(
    serve: Serve, repo_config: Config, redis: Redis, http: aiohttp.ClientSession
) -> None:
    owner = WebhookReceiver(REPO_WEBHOOK_SECRET)
    receiver = web.AppRunner(owner.app())
    await receiver.setup()
    port = free_port()
    await web.TCPSite(receiver, "127.0.0.1", port).start()
    async with serve(repo_config) as service:
        assert service.notifier is not None
        webhook = f"http://127.0.0.1:{port}/alerts"
        await service.notifier.registry("doorbell").add(Device("d1", "ann", webhook=webhook))
        status, press = await post_events(
            http, service, "doorbell/d1/button_press", {"battery": 80}
        )
        assert status == 202
        status, reading = await post_events(
            http, service, "doorbell/d1/temperature", {"value": 21.5}
        )
        assert status == 202

        assert press["accepted"][0]["class"] == "doorbell.button_press"
        assert reading["accepted"][0]["class"] == "doorbell.reading"
        [alert] = await wait_for(lambda: _entries(redis, "doorbell:alerts"))
        assert alert == {
            "event_id": press["accepted"][0]["id"],
            "device_id": "d1",
            "kind": "ring",
        }
        assert [a["kind"] for a in owner.alerts] == ["ring"]  # the owner had it first
        # readings are batched for up to max_wait_ms (2 s) before the summary is written
        [summary] = await wait_for(lambda: _entries(redis, "doorbell:readings"), timeout=10)
        assert summary["device_id"] == "d1"
        assert (summary["kind"], summary["count"], summary["mean"]) == ("temperature", "1", "21.5")
    await receiver.cleanup()


async def test_repo_config_walks_a_healthy_patient_through_every_clinic_station(
    serve: Serve, repo_config: Config, redis: Redis, http: aiohttp.ClientSession
) -> None:
    patient = {
        "patient_id": "p-17",
        "name": "Ada Lovelace",
        "birth_date": "1985-12-10",
        "temperature_c": 36.6,
    }
    async with serve(repo_config) as service:
        status, reply = await post_events(http, service, "clinic/arrival", patient)

        assert status == 202
        [accepted] = reply["accepted"]
        assert accepted["class"] == "clinic.arrival"
        stations = ("arrival", "registration", "vaccination", "monitoring", "departure")
        await wait_for(
            lambda: all(processed(service, f"clinic.{station}") == 1 for station in stations),
            timeout=15,
        )
        records = Records(redis, "clinic")
        visit = await records.get(f"visit:{accepted['id']}")  # named after its arrival
        assert (visit["patient_id"], visit["outcome"]) == ("p-17", "vaccinated")
        assert (await records.get("patient:p-17"))["visit"] == accepted["id"]
        # arrival -> registration -> vaccination -> monitoring -> departure -> the archive
        [closed] = await stream_entries(redis, keys.stream("clinic.visits"))
        assert Envelope.decode(closed["e"]).id == accepted["id"] + ".0.0.0.0.0"
        [dose] = await _entries(redis, "clinic:doses")
        assert dose["patient_id"] == "p-17"


async def test_repo_config_logs_each_patient_of_a_group_under_their_own_id(
    serve: Serve, repo_config: Config, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """Patients arriving together are screened and observed as one batch, but each one's
    visit must still be logged under their own patient_id."""
    patients = [
        {"patient_id": pid, "name": name, "birth_date": "1990-01-01", "temperature_c": 36.6}
        for pid, name in (("p-1", "Grace Hopper"), ("p-2", "Alan Turing"))
    ]
    async with serve(repo_config) as service:
        status, _ = await post_events(http, service, "clinic/arrival", patients)
        assert status == 202

        await wait_for(lambda: processed(service, "clinic.departure") == 2, timeout=15)
        doses = await _entries(redis, "clinic:doses")
        assert sorted(dose["patient_id"] for dose in doses) == ["p-1", "p-2"]
        records = Records(redis, "clinic")
        visits = [await records.get(f"visit:{v}") for v in await _visits_of(records, "p-1", "p-2")]
        assert sorted((v["patient_id"], v["outcome"]) for v in visits) == [
            ("p-1", "vaccinated"),
            ("p-2", "vaccinated"),
        ]
        assert len({v["visit_id"] for v in visits}) == 2  # each under their own visit


async def _visits_of(records: Records, *patients: str) -> list[str]:
    """Each patient's latest visit id."""
    return [(await records.get(f"patient:{patient}"))["visit"] for patient in patients]
