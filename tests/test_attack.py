"""The attack as a test: hypothesis makes hostile traffic for the repository's config.yaml, and
the service (real Redis, real mosquitto) must account for every event it accepted.

Every event carries a unique `event_id`, which becomes its id, and an oracle says where it
must end up: in the music lake (an interaction, a value of the wrong kind such as `track:
true` dropped from its row and counted), in the class's dead letters with the reason
`permanent` (no usable `user_id`: nobody's interaction), or in `_unrouted` (an action no rule
knows). An element that is not an object is kept in `_rejected` on its
own (MQTT), or refuses its whole request with 422 (HTTP). The service must never restart a
pool nor its MQTT ingress, and no good event may land in a dead-letter stream.

Hypothesis generates the traffic up front (one service for all of it), so a failure is
reported with the whole traffic rather than shrunk to one example.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from helpers import lake_rows, scraped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import mqtt_client, wait_for

from router.streams import keys

if TYPE_CHECKING:
    from pathlib import Path

    import aiohttp
    from helpers import Serve
    from redis.asyncio import Redis
    from servers import BrokerServer

    from router.config import Config
    from router.service.service import Service

pytestmark = pytest.mark.integration

ACTIONS = [
    "like_song", "skip_song", "change_song", "select_channel", "remove_channel",
    "add_to_playlist", "remove_from_playlist", "play_start", "play_end",
]  # fmt: skip
MUSIC = "music.interactions"
LOG_FIELDS = ["timestamp", "screen", "device", "platform", "app_version", "track", "artist"]

hostile = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=2**64, max_value=2**70),  # beyond what an envelope can store
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
good = st.fixed_dictionaries(
    {"action": st.sampled_from(ACTIONS), "user_id": st.integers(1, 50)},
    optional=dict.fromkeys(LOG_FIELDS, st.text(max_size=8) | st.integers(0, 9) | st.none()),
)
wrong_kind = (
    st.booleans() | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(), st.text())
)
# Half the poison goes to user_id (a dead letter), half to the fields a row drops and counts.
poisoned = st.tuples(
    good, st.sampled_from([*LOG_FIELDS, *["user_id"] * len(LOG_FIELDS)]), wrong_kind
).map(lambda t: {**t[0], t[1]: t[2]})
unknown = good.map(lambda event: {**event, "action": "create_playlist"})
anything = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(ACTIONS) | hostile,
        "user_id": st.integers(1, 50) | hostile,
        **dict.fromkeys(LOG_FIELDS, hostile),
    },
)
element = st.one_of(good, poisoned, unknown, anything, hostile)
shipment = st.tuples(
    st.sampled_from(["http", "mqtt"]),
    st.sampled_from(["music/7/events", "music/x/events", "musik/7/events"]),
    st.lists(element, min_size=1, max_size=6),
    st.booleans(),  # one element sent as an object rather than an array
)


@dataclass
class Ledger:
    """Where each accepted event must end up, by id, and how many rejects were earned."""

    logged: set[str] = field(default_factory=set, repr=False)
    dead: dict[str, str] = field(default_factory=dict, repr=False)  # id -> class
    unrouted: set[str] = field(default_factory=set, repr=False)
    not_objects: int = 0
    refused_requests: int = 0

    @property
    def expected(self) -> int:
        return len(self.logged) + len(self.dead) + len(self.unrouted)


def storable(value: Any) -> bool:
    """Whether msgpack (and so an envelope) can hold the value."""
    try:
        msgpack.packb(value)
    except (OverflowError, TypeError, ValueError):
        return False
    return True


def destination(topic: str, event: dict[str, Any]) -> tuple[str, str | None]:
    """Where the config's rules and the music actor must send one storable event."""
    action = event.get("action")
    routed = (
        topic.startswith("music/")
        and isinstance(action, str)
        and action in ACTIONS
        and "user_id" in event
    )
    if not routed:
        return "unrouted", None
    user = event["user_id"]
    usable = (isinstance(user, str) and user.strip()) or (
        isinstance(user, int) and not isinstance(user, bool)
    )
    return ("logged" if usable else "dead"), MUSIC


def traffic(count: int) -> list[tuple[str, str, list[Any], bool]]:
    """`count` shipments, drawn by hypothesis."""
    drawn: list[tuple[str, str, list[Any], bool]] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,  # the same traffic every run
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(shipment)
    def draw(one: tuple[str, str, list[Any], bool]) -> None:
        drawn.append(one)

    draw()
    return drawn[:count]


@dataclass
class Wire:
    """The two ways in: the service's HTTP ingress and a device's MQTT connection."""

    service: Service
    http: aiohttp.ClientSession
    mqtt: Any


async def send(
    wire: Wire, number: int, ship: tuple[str, str, list[Any], bool], ledger: Ledger
) -> None:
    how, topic, elements, as_object = ship
    for index, value in enumerate(elements):
        if isinstance(value, dict):
            value["event_id"] = f"atk-{number}-{index}"
    alone = as_object and len(elements) == 1 and isinstance(elements[0], dict)
    body: Any = elements[0] if alone else elements
    events = [e for e in elements if isinstance(e, dict) and storable(e)]
    bad = len(elements) - len(events)
    if how == "http":
        url = f"http://127.0.0.1:{wire.service.http_port}/events/{topic}"
        async with wire.http.post(url, data=json.dumps(body).encode()) as response:
            if bad:
                assert response.status == 422, await response.text()
                ledger.refused_requests += 1
                return
            assert response.status == 202, await response.text()
    else:
        await wire.mqtt.publish(topic, json.dumps(body).encode(), qos=1)
        ledger.not_objects += bad
    for event in events:
        place, cls = destination(topic, event)
        event_id = event["event_id"]
        if place == "logged":
            ledger.logged.add(event_id)
        elif place == "dead":
            ledger.dead[event_id] = cls or ""
        else:
            ledger.unrouted.add(event_id)


async def ids_in(redis: Redis, stream: str, field_name: bytes = b"id") -> set[str]:
    entries: Any = await redis.xrange(stream)
    return {fields[field_name].decode() for _, fields in entries if field_name in fields}


@pytest.fixture
def attack_config(repo_config: Config, mosquitto: BrokerServer) -> Config:
    subscriptions = ["music/#", "musik/#"]
    mqtt = repo_config.mqtt.model_copy(
        update={"url": mosquitto.url, "client_id": "attack", "subscriptions": subscriptions}
    )
    return repo_config.model_copy(update={"mqtt": mqtt})


async def dead_ids(redis: Redis) -> set[str]:
    """Ids in the music class's dead letters."""
    return await ids_in(redis, keys.dead_letters(MUSIC))


def logged_ids(lake: Path) -> set[str]:
    return {row["event_id"] for row in lake_rows(lake)}


@pytest.mark.timeout(180)
async def test_hostile_traffic_is_handled_or_kept_with_a_reason_and_never_loops(
    *,
    serve: Serve,
    attack_config: Config,
    redis: Redis,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    ledger = Ledger()
    lake = tmp_path / "lake"  # where repo_config puts it
    shipments = traffic(400)
    async with serve(attack_config) as service, mqtt_client(attack_config.mqtt.url) as mqtt:
        await wait_for(lambda: service.mqtt is not None and service.mqtt.connected, timeout=10)
        for number, ship in enumerate(shipments):
            await send(Wire(service, http, mqtt), number, ship, ledger)
        for garbage in (b"\xc1\xff not json", b"\xc1{", b"[]"):
            await mqtt.publish("music/7/events", garbage, qos=1)

        async def accounted() -> bool:
            logged = logged_ids(lake)
            unrouted = await ids_in(redis, keys.unrouted())
            return len(logged) + len(await dead_ids(redis)) + len(unrouted) >= ledger.expected

        await wait_for(accounted, timeout=60, interval=0.2, message="every event accounted for")
        for name in attack_config.classes:  # lane workers' counters merged in
            labels = {"class": name}
            assert await scraped(http, service, "switchyard_pool_restarts_total", labels) == 0
        assert service.mqtt is not None
        assert service.mqtt.connected

    logged = logged_ids(lake)
    assert logged == ledger.logged, "interactions missing from the lake, or bad ones in it"
    assert await dead_ids(redis) == set(ledger.dead), "a good event in a dead-letter stream"
    for event_id, cls in ledger.dead.items():
        letters: Any = await redis.xrange(keys.dead_letters(cls))
        [reason] = [f[b"reason"] for _, f in letters if f[b"id"] == event_id.encode()]
        assert reason == b"permanent", event_id
    assert await ids_in(redis, keys.unrouted()) == ledger.unrouted
    rejected: Any = await redis.xrange(keys.rejected())
    reasons = [fields[b"reason"] for _, fields in rejected]
    assert reasons.count(b"invalid") == ledger.not_objects + 1  # and "[]": no events at all
    assert reasons.count(b"decode_error") == 2  # the two that are not JSON
    output = capsys.readouterr().out
    assert "restarting" not in output, "a pool or the ingress restarted"
    # a real attack: every kind of outcome was exercised, many times
    flagged = sum(1 for row in lake_rows(lake) if row["invalid"])  # kept, a value dropped
    counts = (len(ledger.logged), flagged, len(ledger.dead), len(ledger.unrouted))
    print(f"attack outcomes (logged, of which with a value dropped, dead, unrouted): {counts}")
    assert min(*counts, ledger.not_objects) > 10
    assert ledger.refused_requests > 10
