"""Hostile input, as an attacker or an unlucky sender would send it: bad values inside valid
JSON, class templates filled by values no check foresaw, repeated ids, and small inputs that
would cost a lot of memory or storage. Each case keeps its neighbours' events whole.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from actors_for_tests import probe
from helpers import (
    THINGS,
    client_id,
    lake_rows,
    post_accepted,
    post_events,
    processed,
    publish,
    sample,
    scraped,
    stream_entries,
    subscribed,
)
from servers import mqtt_service_yaml, wait_for

from router.config import Config, parse_config
from router.streams import keys
from router.streams.redis import SCRIPT_ITEMS
from router.streams.retention import Retention
from router.streams.transport import Outgoing

if TYPE_CHECKING:
    from pathlib import Path

    import aiohttp
    from helpers import Serve
    from redis.asyncio import Redis
    from servers import BrokerServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("probes")]

# A rule whose class is filled in from the payload, pinned to two numbers by its match.
LEVELS = """
routes:
  - topic: sensor/+
    match:
      level: {in: [1, 2]}
    class: sensor.level{level}
    key: topic.1
classes:
  sensor.level1: {lane: high, actor: "actors_for_tests:Recorder", options: {name: level1}}
  sensor.level2: {lane: high, actor: "actors_for_tests:Recorder", options: {name: level2}}
"""


def make_config(redis_url: str, body: str = THINGS, service: str = "") -> Config:
    return parse_config(f"""
service: {{drain_timeout_s: 10{", " + service if service else ""}}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
lanes: [{{name: high}}, {{name: low}}]
{body}""")


async def _dead_is(
    http: aiohttp.ClientSession, service: Any, labels: dict[str, str], count: int
) -> bool:
    return await scraped(http, service, "switchyard_events_processed_total", labels) == count


def restarts(service: Any, cls: str) -> float:
    return sample(service, "switchyard_pool_restarts_total", {"class": cls})


# --- one bad value never takes its neighbours with it ---


async def test_a_boolean_where_text_belongs_never_takes_its_neighbours_with_it(
    serve: Serve, repo_config: Config, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """20 posts of 50 music events, each with one `track: true` (dropped from its row and
    counted, the row kept) and one `user_id: true` (no user: that event alone is a dead
    letter). Once, on main: 0 of 980 good events handled within 60 s, the pool restarting 8
    times."""
    bad_track: list[str] = []
    no_user: list[str] = []
    async with serve(repo_config) as service:
        for post in range(20):
            events: list[dict[str, Any]] = [
                {"user_id": post * 50 + n, "action": "like_song", "track": f"t{n}"}
                for n in range(50)
            ]
            events[post % 50]["track"] = True
            events[(post + 1) % 50]["user_id"] = True
            ids = await post_accepted(http, service, f"music/{post}/events", events)
            bad_track.append(ids[post % 50])
            no_user.append(ids[(post + 1) % 50])

        cls = "music.interactions"  # handled by the archive lane's worker process
        outcome = {"class": cls, "outcome": "dead"}
        await wait_for(lambda: len(lake_rows(tmp_path / "lake")) == 980, timeout=30)
        await wait_for(lambda: _dead_is(http, service, outcome, 20), timeout=10)
        restarted = "switchyard_pool_restarts_total"
        assert await scraped(http, service, restarted, {"class": cls}) == 0

    rows = lake_rows(tmp_path / "lake")
    assert sorted(r["event_id"] for r in rows if r["invalid"]) == sorted(bad_track)
    assert {tuple(r["invalid"]) for r in rows if r["invalid"]} == {("track",)}
    letters = await stream_entries(redis, keys.dead_letters(cls))
    assert sorted(d["id"].decode() for d in letters) == sorted(no_user)
    assert {d["reason"] for d in letters} == {b"permanent"}
    assert all(b"user_id must be" in d["error"] for d in letters)


async def test_one_bad_patient_in_an_arrival_batch_fails_alone(
    serve: Serve, repo_config: Config, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """Nine good patients and one with `temperature_c: "hot"` (main: 8 good patients were
    dead-lettered with the bad one)."""
    patients = [
        {"patient_id": f"p{n}", "name": f"P {n}", "birth_date": "1990-01-01", "temperature_c": 36.6}
        for n in range(10)
    ]
    patients[4]["temperature_c"] = "hot"
    async with serve(repo_config) as service:
        ids = await post_accepted(http, service, "clinic/arrival", patients)

        await wait_for(lambda: processed(service, "clinic.registration") == 9, timeout=15)
        await wait_for(lambda: processed(service, "clinic.arrival", "dead") == 1)
        assert processed(service, "clinic.arrival") == 9
        assert processed(service, "clinic.arrival", "retried") == 0
    [dead] = await stream_entries(redis, keys.dead_letters("clinic.arrival"))
    assert dead["id"].decode() == ids[4]
    assert dead["reason"] == b"permanent"
    assert b"temperature_c must be a number" in dead["error"]


async def test_an_actor_appending_a_value_redis_cannot_store_fails_that_event_only(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """`ctx.append` checks each field as the handler calls it, so the write that carries the
    neighbours' outputs never meets the bad value (main: redis-py raised at the flush, and the
    pool's TaskGroup died with everything in it)."""
    body = THINGS.replace("actors_for_tests:Recorder", "actors_for_tests:Appender")
    async with serve(make_config(redis_url, body)) as service:
        ids = await post_accepted(
            http,
            service,
            "things/1",
            [{"key": "a", "value": 1}, {"key": "b", "value": True}, {"key": "c", "value": "x"}],
        )
        await wait_for(lambda: processed(service, "things") == 2)
        await wait_for(lambda: processed(service, "things", "dead") == 1, timeout=10)
        assert restarts(service, "things") == 0
    appended = await stream_entries(redis, "test:appended")
    assert sorted(e["id"].decode() for e in appended) == sorted([ids[0], ids[2]])
    [dead] = await stream_entries(redis, keys.dead_letters("things"))
    assert dead["id"].decode() == ids[1]
    assert b"field 'value' is a bool" in dead["error"]


# --- routing: typed values, and classes that exist ---


async def test_a_class_template_filled_by_a_boolean_or_a_float_routes_nowhere(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """`True == 1` in Python, so `{"level": true}` passed `in: [1, 2]` and named the class
    `sensor.levelTrue`, which does not exist (main: HTTP 500)."""
    async with serve(make_config(redis_url, LEVELS)) as service:
        for level in (True, 1.0, "1"):
            status, reply = await post_events(http, service, "sensor/s1", {"level": level})
            assert status == 202, reply
            assert reply["accepted"][0].get("unrouted") is True, level
        status, reply = await post_events(http, service, "sensor/s1", {"level": 1})
        assert status == 202
        assert reply["accepted"][0]["class"] == "sensor.level1"
        await wait_for(lambda: len(probe("level1").handled) == 1)
    assert await redis.xlen(keys.unrouted()) == 3


async def test_over_mqtt_a_template_filled_by_a_boolean_costs_nothing_but_itself(
    serve: Serve, redis_url: str, redis: Redis, mosquitto: BrokerServer
) -> None:
    """The bad message and 20 good ones after it (main: the ingress crashed twice and all 21
    vanished, acknowledged and never written)."""
    config = parse_config(
        mqtt_service_yaml(
            redis_url,
            mosquitto.url,
            client_id=client_id("levels"),
            subscriptions=("sensor/+",),
            body=LEVELS,
        )
    )
    async with serve(config) as service:
        await subscribed(service)
        messages = [("sensor/s1", json.dumps({"level": True}).encode())]
        messages += [("sensor/s1", json.dumps({"level": 2, "n": n}).encode()) for n in range(20)]
        await publish(mosquitto, messages)

        await wait_for(lambda: len(probe("level2").handled) == 20, timeout=10)
        mqtt = {"outcome": "accepted"}
        await wait_for(lambda: sample(service, "switchyard_mqtt_messages_total", mqtt) == 20)
        assert sample(service, "switchyard_mqtt_messages_total", {"outcome": "kept"}) == 1
        assert sample(service, "switchyard_mqtt_connected") == 1
    [unrouted] = await stream_entries(redis, keys.unrouted())
    assert msgpack.unpackb(unrouted["payload"]) == {"level": True}


# --- repeated ids ---


async def test_an_event_id_reused_for_another_event_is_flagged_counted_and_not_written(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """The promise: a source `event_id` is an idempotency key within its class for
    `dedup_window_s`; a repeat is answered 202 but not written again, whatever it holds
    (main: silently, with nothing to tell the sender or ops)."""
    async with serve(make_config(redis_url)) as service:
        _, first = await post_events(http, service, "things/1", {"event_id": "e1", "n": 1})
        _, again = await post_events(http, service, "things/1", {"event_id": "e1", "n": 2})

        assert first["accepted"] == [{"id": "e1", "class": "things"}]
        assert again["accepted"] == [{"id": "e1", "class": "things", "duplicate": True}]
        counted = {"class": "things", "source": "http"}
        assert sample(service, "switchyard_events_deduplicated_total", counted) == 1
        assert sample(service, "switchyard_events_ingested_total", counted) == 1
        await wait_for(lambda: len(probe("things").handled) == 1)
        assert probe("things").handled[0].payload == {"event_id": "e1", "n": 1}


# --- amplification: what a small input may cost ---


async def test_an_mqtt_array_of_bad_elements_costs_storage_in_proportion_to_its_size(
    serve: Serve, redis_url: str, redis: Redis, mosquitto: BrokerServer
) -> None:
    """Each bad element is kept on its own, never with the whole message again (main: a
    137 KB message cost 164 MB of Redis: the raw body once per bad element)."""
    # 900 events that cannot be stored: an integer beyond 64 bits in each
    elements = [{"key": "k", "n": 10**30, "pad": f"{n:04d}" + "x" * 110} for n in range(900)]
    message = json.dumps(elements).encode()
    config = parse_config(
        mqtt_service_yaml(redis_url, mosquitto.url, client_id=client_id("amp"), body=THINGS)
    )
    async with serve(config) as service:
        await subscribed(service)
        await publish(mosquitto, [("things/1", message)])
        await wait_for(
            lambda: (
                sample(service, "switchyard_events_rejected_total", {"reason": "invalid"}) == 900
            )
        )

    used: Any = await redis.memory_usage(keys.rejected(), samples=0)
    assert len(message) > 130_000
    assert used < 4 * len(message), f"{used} bytes of Redis for a {len(message)}-byte message"


async def test_an_mqtt_message_over_max_batch_events_is_kept_once_cut_to_max_event_bytes(
    serve: Serve, redis_url: str, redis: Redis, mosquitto: BrokerServer
) -> None:
    """50,000 events in one message (main: one Lua call held Redis for 380 ms)."""
    message = json.dumps([{"key": "k", "n": n} for n in range(50_000)]).encode()
    config = parse_config(
        mqtt_service_yaml(redis_url, mosquitto.url, client_id=client_id("big"), body=THINGS)
    )
    async with serve(config) as service:
        await subscribed(service)
        await publish(mosquitto, [("things/1", message)])
        reason = {"reason": "too_large"}
        await wait_for(lambda: sample(service, "switchyard_events_rejected_total", reason) == 1)
    [kept] = await stream_entries(redis, keys.rejected())
    assert int(kept["raw_bytes"]) == len(message)
    assert kept["raw"] == message[:65_536]
    assert b"over the batch limit of 1000" in kept["error"]
    assert await redis.xlen(keys.stream("things")) == 0


async def test_a_large_write_goes_to_redis_in_short_script_calls(
    serve: Serve, redis_url: str, redis: Redis
) -> None:
    async with serve(make_config(redis_url)) as service:
        before = (await redis.info("commandstats")).get("cmdstat_eval", {}).get("calls", 0)
        items = [Outgoing("things", b"\x00" * 8) for _ in range(4 * SCRIPT_ITEMS)]
        ids = await service.transport.publish(items)
        after = (await redis.info("commandstats"))["cmdstat_eval"]["calls"]
    assert all(ids)
    assert after - before == 4


async def test_dead_letter_streams_are_cut_to_their_length_and_age_and_the_cut_is_counted(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    """`_unrouted` and `_rejected` grew for ever (main: never trimmed)."""
    config = make_config(redis_url, service="dead_letter_max_len: 5, dead_letter_max_age_s: 3600")
    async with serve(config) as service:
        for n in range(8):
            await post_accepted(http, service, "nowhere/1", {"n": n})
        retention = Retention(config, service.transport, service.metrics)

        assert await retention.trim_dead_letters(keys.UNROUTED) == 3
        assert await redis.xlen(keys.unrouted()) == 5
        assert await retention.trim_dead_letters(keys.UNROUTED, now=_hours_from_now(2)) == 5
        counted = {"class": keys.UNROUTED}
        assert sample(service, "switchyard_dead_letters_trimmed_total", counted) == 8
    assert await redis.xlen(keys.unrouted()) == 0


def _hours_from_now(hours: float) -> float:
    return time.time() + hours * 3600
