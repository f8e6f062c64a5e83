"""Small helpers shared by the integration tests: POSTing events to a running service, reading
its metrics, reading streams and pending counts from its Redis, reading its music lake, and
talking MQTT to it.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
from prometheus_client.parser import text_string_to_metric_families
from servers import BrokerServer, mqtt_client, wait_for

from actors.music.lake import Lake
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import Mapping
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    import aiohttp
    from actors_for_tests import Probe
    from redis.asyncio import Redis

    from router.clock import Clock
    from router.config import Config
    from router.service.service import Service
    from router.streams.client import RedisClient

GROUP = "switchyard"


def routed_class(
    cls: str,
    actor: str,
    options: str,
    *,
    mode: str = "queue",
    concurrency: int = 4,
    settings: str = "",
) -> str:
    """`routes:` and `classes:` for one class in lane `high`, fed by `<cls>/+` and keyed by
    payload.key. `options` is the inside of the actor's options map; `settings` more class
    keys, one per line."""
    more = "".join(f"\n    {line.strip()}" for line in settings.splitlines() if line.strip())
    return f"""
routes:
  - topic: {cls}/+
    class: {cls}
    key: key
classes:
  {cls}:
    lane: high
    actor: {actor}
    mode: {mode}
    concurrency: {concurrency}{more}
    options: {{{options}}}
"""


# `things/<id>` events, keyed by payload.key, recorded by the test actor "things".
THINGS = routed_class("things", "actors_for_tests:Recorder", "name: things")


# The `serve` fixture (conftest.py): `async with serve(config) as service:`.
class Serve(Protocol):
    """The `serve` fixture: `async with serve(config[, clock]) as service:`."""

    def __call__(
        self, config: Config, clock: Clock | None = None
    ) -> AbstractAsyncContextManager[Service]: ...


def events_url(service: Service, topic: str) -> str:
    """The service's HTTP ingress for `topic`."""
    return f"http://127.0.0.1:{service.http_port}/events/{topic}"


async def post_accepted(
    http: aiohttp.ClientSession, service: Service, topic: str, body: Any
) -> list[str]:
    """POST a JSON body, insist on 202, and return the accepted ids."""
    async with http.post(events_url(service, topic), data=json.dumps(body).encode()) as response:
        assert response.status == 202, await response.text()
        reply = await response.json()
    return [accepted["id"] for accepted in reply["accepted"]]


async def post_events(
    http: aiohttp.ClientSession,
    service: Service,
    topic: str,
    body: Any,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """POST `body` (bytes as they are, anything else as JSON) and return (status, JSON reply)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(
        events_url(service, topic), data=data, headers={"Content-Type": content_type}
    ) as response:
        return response.status, await response.json()


def sample(service: Service, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the service's own registry; 0 when the series does not exist."""
    return service.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def processed(service: Service, cls: str, outcome: str = "ok") -> float:
    """Events of `cls` handled with `outcome` (switchyard_events_processed_total)."""
    return sample(service, "switchyard_events_processed_total", {"class": cls, "outcome": outcome})


async def stream_entries(redis: Redis, stream: str) -> list[dict[str, bytes]]:
    """The fields of every entry of `stream`, oldest first, with text field names."""
    reply: Any = await redis.xrange(stream)
    return [{name.decode(): value for name, value in fields.items()} for _, fields in reply]


async def pending(redis: RedisClient, cls: str = "work") -> int:
    """Entries of `cls` delivered to a consumer and not acknowledged (XPENDING)."""
    summary: Any = await redis.xpending(keys.stream(cls), GROUP)
    return int(summary["pending"])


async def scraped(
    http: aiohttp.ClientSession, service: Service, name: str, labels: dict[str, str]
) -> float:
    """A sample of the service's /metrics, its lane workers' merged in (0 when absent)."""
    async with http.get(f"http://127.0.0.1:{service.http_port}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and labels.items() <= found.labels.items():
                return float(found.value)
    return 0.0


def lake_rows(lake: str | Path) -> list[dict[str, Any]]:
    """Every row of a music lake, repeats included, as dicts."""
    con = duckdb.connect()
    Lake(str(lake)).register(con)
    relation = con.sql("SELECT * FROM interactions")
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


# --- MQTT ---


def client_id(tag: str) -> str:
    """An MQTT client id no other test (or run) uses."""
    return f"sy-test-{tag}-{uuid.uuid4().hex[:8]}"


def connected(service: Service) -> float:
    """The service's switchyard_mqtt_connected gauge: 1 while subscribed, else 0."""
    return sample(service, "switchyard_mqtt_connected")


async def subscribed(service: Service) -> None:
    """Wait until the ingress is connected and its SUBACKs are in: publishing is safe now."""
    await wait_for(lambda: connected(service) == 1, timeout=10, message="mqtt connected")


async def publish(broker: BrokerServer, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 as a device would: one connection, each message confirmed by the broker."""
    async with mqtt_client(broker.url, broker.protocol) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def numbers(seen: Probe) -> list[int]:
    """The `n` of every event the probe handled, sorted (duplicates kept)."""
    return sorted(int(event.payload["n"]) for event in seen.handled)


class Quiet:
    """An observed process with nothing to say: the views are not under test here."""

    async def exposition(self) -> bytes:
        return b""

    async def readiness_problems(self) -> list[str]:
        return []

    async def class_views(self) -> Mapping[str, Any]:
        return {}

    def pool_views(self) -> Mapping[str, Any]:
        return {}

    def config_said(self) -> Mapping[str, Any]:
        return {}
