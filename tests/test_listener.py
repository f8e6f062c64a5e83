"""The service's HTTP listener over raw sockets: events POSTs answered by the listener, every
other request by aiohttp, on one kept-alive connection, in order; and what it hands aiohttp
for good (a chunked body, a head it cannot frame)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import pytest
from redis.asyncio import Redis
from servers import wait_for

from router.config import HttpConfig, ServiceConfig, parse_config
from router.ingress.http import Reply
from router.ingress.listener import (
    BUFFERED,
    HEAD_KEPT_BYTES,
    HEADS_KEPT,
    Head,
    Listener,
    parsed_head,
    remembered_head,
)
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiohttp import web
    from helpers import Serve

    from router.ingress.http import EventsEndpoint
    from router.service.service import Service

AIOHTTP = b"Server: Python"  # aiohttp's answers say who wrote them; the listener's do not


@pytest.fixture
async def service(serve: Serve, redis_url: str) -> AsyncIterator[Service]:
    config = parse_config(f"""
redis: {{url: "{redis_url}"}}
service: {{max_body_bytes: 4096}}
http: {{port: 0, idle_timeout_s: 2, body_timeout_s: 2}}
lanes: [{{name: high}}]
routes: [{{topic: "things/+", class: things}}]
classes: {{things: {{lane: high, actor: "actors.builtin:Log"}}}}
""")
    async with serve(config) as running:
        yield running


def post(topic: str, body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    length = b"Content-Length: %d" % len(body)
    head = [b"POST /events/%s HTTP/%s" % (topic.encode(), version), b"Host: x",
            b"Content-Type: application/json", length, *extra]  # fmt: skip
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def get(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()


async def answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One answer off the connection: (status line and headers, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )  # fmt: skip
    return head, await asyncio.wait_for(reader.readexactly(length), timeout=10)


async def written(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        return int(await redis.xlen(keys.stream("things")))
    finally:
        await redis.aclose()


async def test_events_and_views_share_a_kept_alive_connection(
    service: Service, redis_url: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    statuses = []
    for request in (get("/healthz"), post("things/1", b'{"n": 1}'), get("/classes"),
                    post("things/2", b'{"n": 2}')):  # fmt: skip
        writer.write(request)
        head, _ = await answer(reader)
        statuses.append((head.split(b"\r\n")[0], AIOHTTP in head))
    writer.close()
    assert statuses == [
        (b"HTTP/1.1 200 OK", True),
        (b"HTTP/1.1 202 Accepted", False),  # the listener's own, after aiohttp's
        (b"HTTP/1.1 200 OK", True),
        (b"HTTP/1.1 202 Accepted", False),
    ]
    assert await written(redis_url) == 2


async def test_pipelined_requests_are_answered_in_order(service: Service, redis_url: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    count = 300
    requests = [post("things/1", b'{"n": %d}' % n) if n % 3 else get("/healthz")
                for n in range(count)]  # fmt: skip
    writer.write(b"".join(requests))  # all at once, none read yet
    answers = [await answer(reader) for _ in range(count)]
    writer.close()
    expected = [b"HTTP/1.1 202 Accepted" if n % 3 else b"HTTP/1.1 200 OK" for n in range(count)]
    assert [head.split(b"\r\n")[0] for head, _ in answers] == expected
    assert await written(redis_url) == count - len(range(0, count, 3))


async def test_a_chunked_body_is_served_by_aiohttp_and_so_is_the_rest(
    service: Service, redis_url: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(
        b"POST /events/things/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'8\r\n{"n": 1}\r\n0\r\n\r\n'
    )
    chunked, _ = await answer(reader)
    writer.write(post("things/1", b'{"n": 2}'))
    after, _ = await answer(reader)
    writer.close()
    assert chunked.startswith(b"HTTP/1.1 202")
    assert AIOHTTP in chunked
    assert after.startswith(b"HTTP/1.1 202")
    assert AIOHTTP in after
    assert await written(redis_url) == 2


async def test_expect_continue_is_answered_before_the_body(
    service: Service, redis_url: str
) -> None:
    """What curl does for a body over 1 kB: it waits for 100 Continue before sending it."""
    body = b'{"pad": "%s"}' % (b"x" * 1500)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(
        post("things/1", b"", b"Expect: 100-continue").replace(
            b"Length: 0", b"Length: %d" % len(body)
        )
    )
    proceed = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    writer.write(body)
    head, _ = await answer(reader)
    writer.close()
    assert proceed == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert head.startswith(b"HTTP/1.1 202")
    assert await written(redis_url) == 1


async def answered_and_closed(service: Service, request: bytes) -> tuple[bytes, bytes]:
    """The answer to `request` on a connection of its own, which the service then closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(request)
    head, body = await answer(reader)
    closed = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert closed == b"", "the connection was kept open"
    return head, body


async def test_http_1_0_is_answered_and_closed(service: Service) -> None:
    head, _ = await answered_and_closed(service, post("things/1", b'{"n": 1}', version=b"1.0"))
    assert head.startswith(b"HTTP/1.0 202")
    assert b"Connection: close" in head


async def test_a_body_past_the_limit_is_refused_before_it_is_read(service: Service) -> None:
    too_long = post("things/1", b"").replace(b"Length: 0", b"Length: 999999999")
    head, body = await answered_and_closed(service, too_long)
    assert head.startswith(b"HTTP/1.1 413")
    assert b"4096" in body
    rejected = service.metrics.registry.get_sample_value(
        "switchyard_events_rejected_total", {"reason": "too_large"}
    )
    assert rejected == 1.0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (post("things/1", b"{}").replace(b"Length: 2", b"Length: 2x"), b"400"),
        (post("things/%31", b'{"n": 1}'), b"202"),  # an escape: aiohttp decodes the path
        (post("things/1", b"{oops"), b"400"),
        (b"DELETE /events/things/1 HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"BREW /events/things/1 HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    ],
    ids=["bad-length", "escaped-path", "not-json", "another-method", "unknown-method"],
)
async def test_what_the_listener_does_not_frame_is_answered_by_aiohttp(
    service: Service, request_bytes: bytes, status: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(request_bytes)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    writer.close()
    assert head.split(b" ")[1] == status, head


async def test_a_trickled_events_head_is_closed_as_idle(service: Service) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(b"POST /events/things/1 HTTP/1.1\r\nHost: x\r\n")  # never the blank line
    assert await asyncio.wait_for(reader.read(), timeout=10) == b""
    writer.close()


@pytest.mark.parametrize(
    ("head", "topic", "length"),
    [
        (post("things/1", b"{}"), "things/1", 2),
        (post("things/1?x=1", b"{}"), "things/1", 2),  # the query is not the topic
        (post("things/../admin", b"{}"), None, 2),  # a dot segment: aiohttp normalises it
        (post("things/1", b"{}", b"Expect: 100-continue"), None, 2),
        (get("/metrics"), None, 0),
    ],
)
def test_heads_the_listener_serves_and_those_it_passes_on(
    head: bytes, topic: str | None, length: int
) -> None:
    parsed = Head.parse(head[: head.index(b"\r\n\r\n") + 4])
    assert parsed is not None
    assert (parsed.topic, parsed.length) == (topic, length)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /events/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /events/a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"not http at all\r\n\r\n",
    ],
    ids=["chunked", "two-lengths", "upgrade", "garbage"],
)
def test_heads_only_aiohttp_can_frame(head: bytes) -> None:
    assert Head.parse(head) is None


def head_bytes(request: bytes) -> bytes:
    return request[: request.index(b"\r\n\r\n") + 4]


def test_a_repeated_head_is_parsed_once_and_the_heads_kept_stay_bounded() -> None:
    raw = head_bytes(post("things/1", b"{}"))
    first = parsed_head(raw)
    assert first is not None
    assert parsed_head(bytes(raw)) is first  # remembered, not parsed again
    other = parsed_head(head_bytes(post("things/2", b"{}")))
    assert other is not None
    assert other.topic == "things/2"
    for n in range(3 * HEADS_KEPT):  # a sender varying its head every time
        assert parsed_head(head_bytes(post(f"things/{n}", b"{}"))) is not None
    assert remembered_head.cache_info().currsize <= HEADS_KEPT
    padded = head_bytes(post("things/1", b"{}", b"X-Pad: " + b"p" * HEAD_KEPT_BYTES))
    assert parsed_head(padded) == parsed_head(padded)
    assert parsed_head(padded) is not parsed_head(padded)  # a long head: parsed each time
    assert parsed_head(b"not http at all\r\n\r\n") is None


# --- a client that does not read its answers, on a connection of the test's own ---


class Socketless:
    """The transport side of one connection, kept in memory."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.7", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def answers(self) -> int:
        return self.written.count(b"HTTP/1.1 202")


class HeldEndpoint:
    """An events endpoint whose answers wait for the test."""

    limits = ServiceConfig()

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.bodies: list[bytes] = []

    async def answer(self, topic: str, body: bytes, content_type: str, encoding: str) -> Reply:
        self.bodies.append(body)
        await self.gate.wait()
        return Reply(202, b"{}")

    def too_large(self) -> Reply:
        return Reply(413, b"{}")


async def test_a_client_that_does_not_read_its_answers_stops_being_read() -> None:
    endpoint = HeldEndpoint()
    listener = Listener(HttpConfig(), cast("web.Server", None), cast("EventsEndpoint", endpoint))
    connection, socket = listener(), Socketless()
    connection.connection_made(cast("asyncio.Transport", socket))
    connection.data_received(post("a/1", b"[1]") + post("a/1", b"[2]"))
    await wait_for(lambda: endpoint.bodies == [b"[1]"])  # one at a time: the second waits
    connection.pause_writing()  # the client's side is full: it reads nothing
    endpoint.gate.set()
    await wait_for(lambda: socket.answers() == 1)
    assert endpoint.bodies == [b"[1]"]  # answered, and the next one is not taken up
    connection.data_received(post("a/1", b"[3]") * (BUFFERED // 50))
    assert not socket.reading  # past BUFFERED: what else it sends waits in its socket
    connection.resume_writing()
    assert socket.reading
    count = 2 + BUFFERED // 50
    await wait_for(lambda: socket.answers() == count, timeout=30)
    assert endpoint.bodies[:3] == [b"[1]", b"[2]", b"[3]"]
    connection.connection_lost(None)
    assert not listener.connections
