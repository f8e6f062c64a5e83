"""Ingest and the HTTP ingress on `router.testing.fake_transport()`: what is written, kept
aside or refused, and which status each refusal gets. No server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers import Quiet
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from router.clock import SystemClock
from router.config import Config, parse_config
from router.errors import RefusedEvents, WriteRefused
from router.ingress.http import EventsEndpoint
from router.ingress.ingest import Ingest
from router.metrics import Metrics
from router.routing.addressing import Addresser
from router.routing.rules import Router
from router.service.web import RUNNER_OPTIONS, service_app
from router.streams import keys
from router.streams.envelope import Envelope
from router.testing import fake_transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp

    from router.streams.redis import RedisTransport

CONFIG = """
service: {max_event_bytes: 512, max_batch_events: 5, max_body_bytes: 4096}
lanes: [{name: high}]
routes:
  - {topic: things/+, class: things, key: key}
classes:
  things: {lane: high, actor: "actors.builtin:Log"}
"""


class Parts:
    """An Ingest on a fake transport, and what it counted."""

    def __init__(self) -> None:
        self.config: Config = parse_config(CONFIG)
        clock = SystemClock()
        self.transport: RedisTransport = fake_transport()
        self.metrics = Metrics(CollectorRegistry())
        addresser = Addresser(self.config, Router.from_config(self.config), clock)
        self.ingest = Ingest(self.config, addresser, self.transport, self.metrics, clock)

    def rejected(self, reason: str) -> float:
        sample = self.metrics.registry.get_sample_value
        return sample("switchyard_events_rejected_total", {"reason": reason}) or 0.0

    async def stream(self, key: str) -> list[dict[bytes, bytes]]:
        entries: Any = await self.transport.redis.xrange(key)
        return [fields for _, fields in entries]


@pytest.fixture
def parts() -> Parts:
    return Parts()


# --- Ingest ---


async def test_accepted_events_are_in_their_class_stream_with_their_ids(parts: Parts) -> None:
    accepted = await parts.ingest.accept("things/1", [{"key": "a"}, {"key": "b"}], "http")
    entries = await parts.stream(keys.stream("things"))
    envelopes = [Envelope.decode(fields[keys.ENVELOPE_FIELD]) for fields in entries]
    assert [e.id for e in envelopes] == [a.id for a in accepted]
    assert [e.key for e in envelopes] == ["a", "b"]


async def test_a_request_with_a_bad_event_writes_nothing_and_names_it(parts: Parts) -> None:
    with pytest.raises(RefusedEvents) as refused:
        await parts.ingest.accept("things/1", [{"key": "a"}, 7, {"n": 10**30}], "http")
    assert [(index, type(exc).__name__) for index, exc in refused.value.problems] == [
        (1, "InvalidEvent"), (2, "InvalidEvent"),
    ]  # fmt: skip
    assert await parts.stream(keys.stream("things")) == []
    assert parts.rejected("invalid") == 2


async def test_a_message_keeps_its_bad_elements_aside_one_by_one(parts: Parts) -> None:
    body = json.dumps([{"key": "a"}, "text", {"key": "b", "pad": "x" * 600}]).encode()
    kept = await parts.ingest.accept_messages([("things/1", body)], "mqtt")
    assert kept == 1
    assert len(await parts.stream(keys.stream("things"))) == 1
    aside = await parts.stream(keys.rejected())
    assert [(f[b"reason"], int(f[b"index"])) for f in aside] == [(b"invalid", 1), (b"too_large", 2)]
    assert msgpack.unpackb(aside[0][b"payload"]) == "text"
    assert b"excerpt" in aside[1]  # over max_event_bytes: an excerpt, not the event


async def test_a_message_over_max_batch_events_is_kept_whole(parts: Parts) -> None:
    body = json.dumps([{"key": str(n)} for n in range(6)]).encode()
    assert await parts.ingest.accept_messages([("things/1", body)], "mqtt") == 1
    [aside] = await parts.stream(keys.rejected())
    assert (aside[b"reason"], aside[b"raw"]) == (b"too_large", body)


async def test_events_redis_refuses_are_kept_aside_and_their_message_still_counts(
    parts: Parts,
) -> None:
    await parts.transport.redis.set(keys.stream("things"), "not a stream")
    kept = await parts.ingest.accept_messages([("things/1", b'{"key": "a"}')], "mqtt")
    assert kept == 1
    [aside] = await parts.stream(keys.rejected())
    assert aside[b"reason"] == b"write_error"
    assert msgpack.unpackb(aside[b"payload"]) == {"key": "a"}


async def test_over_http_events_redis_refuses_are_named_and_the_rest_stand(parts: Parts) -> None:
    await parts.transport.redis.set(keys.stream("things"), "not a stream")
    with pytest.raises(WriteRefused) as refused:
        await parts.ingest.accept("things/1", [{"key": "a"}], "http")
    assert [index for _, index in refused.value.refused] == [0]


async def test_a_repeated_source_id_is_flagged_and_not_written_again(parts: Parts) -> None:
    first = await parts.ingest.accept("things/1", [{"event_id": "x", "n": 1}], "http")
    again = await parts.ingest.accept("things/1", [{"event_id": "x", "n": 2}], "http")
    assert (first[0].duplicate, again[0].duplicate) == (False, True)
    assert len(await parts.stream(keys.stream("things"))) == 1


# --- the HTTP status of each outcome ---


@pytest.fixture
async def client(parts: Parts) -> AsyncIterator[TestClient[aiohttp.web.Request, Any]]:
    limits = parts.config.service
    events = EventsEndpoint(parts.ingest, parts.metrics, limits)
    app = service_app(events, Quiet(), parts.config.http, limits.max_body_bytes)
    server = TestServer(app)
    await server.start_server(**RUNNER_OPTIONS)  # as the service serves it
    async with TestClient(server) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"key": "a"}', {}, 202),
        (b'[{"key": "a"}, {"key": "b"}]', {}, 202),
        (b"{oops", {}, 400),
        (b"[]", {}, 400),
        (b'[{"key": "a"}, 7]', {}, 422),
        (b'{"n": 100000000000000000000000000000}', {}, 422),
        (json.dumps([{"k": n} for n in range(6)]).encode(), {}, 413),
        (json.dumps({"pad": "x" * 600}).encode(), {}, 413),
        (b"x" * 5000, {}, 413),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400),
    ],
    ids=[
        "object", "array", "not-json", "empty", "a-number", "huge-int", "too-many", "event-too-big",
        "body-too-big", "bad-gzip",
    ],
)  # fmt: skip
async def test_each_outcome_has_its_status(
    client: TestClient[aiohttp.web.Request, Any],
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    response = await client.post("/events/things/1", data=body, headers=headers)
    assert response.status == status, await response.text()
    reply = await response.json()
    assert ("accepted" in reply) == (status == 202)


async def test_while_redis_is_away_events_are_refused_with_503_and_retry_after(
    parts: Parts, client: TestClient[aiohttp.web.Request, Any]
) -> None:
    fake = parts.transport.redis
    assert isinstance(fake, Redis)
    fake.connection_pool.connection_kwargs["server"].connected = False
    response = await client.post("/events/things/1", json={"key": "a"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
