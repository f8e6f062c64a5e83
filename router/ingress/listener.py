"""The service's HTTP listener: `POST /events/<topic>` answered by the connection itself,
everything else handed to aiohttp.

A doorbell sends one event per request, so what the server costs per request is what the
event costs. aiohttp builds a request object, routes it, runs the middleware and a response
object around every request: nearly twice what it costs to find the request's head, parse
it with httptools (llhttp) and write the answer straight back (`bench.http_servers`).

So a connection frames its requests itself: the head ends at the first blank line and is
parsed by httptools (once per distinct head: a sender repeats its own), the body is read by
its Content-Length. A plain events POST is answered here. Any other request it can frame
(another path, `Expect`, a path with escapes) is passed on to aiohttp, its body streamed
through as it comes, and answered there. One it cannot frame (a chunked body, an upgrade,
a head that does not parse or is too long) gives aiohttp the connection for good, which
serves and refuses it as before. One request at a time per connection: the bytes of a
pipelined next request wait for the answer before it, and past `BUFFERED` bytes reading
stops.

The listener also keeps every connection's limits, for those it serves and those it hands
over: `max_connections_per_client`, `idle_timeout_s` for a whole request head (idle or
trickling) and between requests, and `body_timeout_s` for an events body (then 408).
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections import Counter
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import httptools
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from router.ingress.http import Reply, error_reply

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest
    from aiohttp.web_response import StreamResponse

    from router.config import HttpConfig
    from router.ingress.access import Access
    from router.ingress.http import EventsEndpoint

HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 16 * 1024  # longer: aiohttp answers it (431 or 400)
BUFFERED = 256 * 1024  # bytes read ahead of the request being served before reading stops
PIPELINED = 4  # requests aiohttp parses ahead on a connection it has for good
HEADS_KEPT = 256  # parsed heads remembered: a device's POSTs repeat their head byte for byte
HEAD_KEPT_BYTES = 1024  # a longer head is parsed every time
NEVER = 10.0**9  # aiohttp's idle timer on a connection it shares: the listener keeps time
TOPIC = re.compile(r"[\w\-.~:@!$&'()*+,;=]+(/[\w\-.~:@!$&'()*+,;=]+)*", re.ASCII)  # no escapes
READ = frozenset((b"content-length", b"content-type", b"content-encoding", b"authorization"))
UNFRAMED = frozenset((b"transfer-encoding", b"upgrade"))  # aiohttp frames these itself
QUIET: dict[str, Any] = {"access_log": None, "auto_decompress": False}  # as the runner's
log = structlog.get_logger("switchyard.http")


class Head(NamedTuple):
    """A request's head, as far as the listener needs it."""

    length: int  # of the body: its Content-Length, or 0
    topic: str | None  # a plain events POST's topic; None: a request for aiohttp
    content_type: str
    encoding: str
    authorization: str
    keep_alive: bool
    version: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Head | None:
        """The head, or None for one the listener cannot frame (chunked, an upgrade, one
        that does not parse): aiohttp takes the connection from there."""
        seen = _Seen()
        parser = httptools.HttpRequestParser(seen)
        try:
            parser.feed_data(raw)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        headers = seen.headers
        length = headers.get(b"content-length", b"0")
        if not seen.complete or seen.unframed or not length.isdigit():
            return None
        content_type = headers.get(b"content-type", b"application/octet-stream")
        return cls(
            length=int(length),
            topic=_events_topic(parser.get_method(), seen),
            content_type=content_type.split(b";")[0].strip().lower().decode("latin-1"),
            encoding=headers.get(b"content-encoding", b"identity").decode("latin-1"),
            authorization=headers.get(b"authorization", b"").decode("latin-1"),
            keep_alive=parser.should_keep_alive(),
            version=parser.get_http_version().encode(),
        )


def parsed_head(raw: bytes) -> Head | None:
    """`Head.parse(raw)`, remembered for a short head: a sender sends the same head again and
    again (its path, its headers, often its body's length), and a head is immutable."""
    return remembered_head(raw) if len(raw) <= HEAD_KEPT_BYTES else Head.parse(raw)


@functools.lru_cache(maxsize=HEADS_KEPT)
def remembered_head(raw: bytes) -> Head | None:
    """The last `HEADS_KEPT` heads parsed, the least recently seen forgotten first."""
    return Head.parse(raw)


def _events_topic(method: bytes, seen: _Seen) -> str | None:
    """The topic of a plain events POST (no Expect, a path without escapes or dot segments)."""
    if method != b"POST" or seen.expect or b"content-length" not in seen.headers:
        return None
    path = httptools.parse_url(seen.url).path.decode("latin-1")
    topic = path[len("/events/") :]
    if not path.startswith("/events/") or not TOPIC.fullmatch(topic) or "/." in path:
        return None
    return topic


class _Seen:
    """httptools' callbacks for one head: the URL and the headers the listener reads."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.unframed = False  # a body or protocol only aiohttp frames, or a header twice
        self.expect = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in UNFRAMED or (name in READ and name in self.headers):
            self.unframed = True
        elif name in READ:
            self.headers[name] = value
        elif name == b"expect":
            self.expect = True

    def on_headers_complete(self) -> None:
        self.complete = True


class Listener:
    """The connections of one listening socket, their limits and their sweep."""

    def __init__(
        self,
        http: HttpConfig,
        handover: web.Server,
        events: EventsEndpoint | None = None,
        access: Access | None = None,
    ) -> None:
        self.http = http
        self.handover = handover  # makes aiohttp's protocol for a connection handed over
        self.events = events  # None: every request goes to aiohttp (the metrics listener)
        self.access = None if access is None or access.open else access
        self.max_body_bytes = events.limits.max_body_bytes if events else 0
        self.connections: set[Connection] = set()
        self.open: Counter[str] = Counter()
        self.closing = False
        self._date = (0, b"")

    def __call__(self) -> Connection:
        return Connection(self)

    def admit(self, connection: Connection) -> bool:
        self.connections.add(connection)
        self.open[connection.client] += 1
        return self.open[connection.client] <= self.http.max_connections_per_client

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.open[connection.client] -= 1
        if self.open[connection.client] <= 0:
            del self.open[connection.client]

    async def answer(self, topic: str, head: Head, body: bytes) -> Reply:
        assert self.events is not None
        if self.access is not None:
            refusal = self.access.refusal(head.authorization, "ingest", "/events/" + topic)
            if refusal is not None:
                return refusal
        return await self.events.answer(topic, body, head.content_type, head.encoding)

    def date(self) -> bytes:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]

    async def sweep(self) -> None:
        """Close what has waited past its limit, a few times per idle timeout."""
        every = min(1.0, self.http.idle_timeout_s / 4, self.http.body_timeout_s / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for connection in list(self.connections):
                connection.check(now)

    async def close(self, timeout_s: float) -> None:
        """Let the events requests in flight be answered (within `timeout_s`), then close the
        connections; those aiohttp is answering on are closed by its own shutdown, after."""
        self.closing = True
        serving = [c.serving for c in self.connections if c.serving is not None]
        if serving:
            await asyncio.wait(serving, timeout=timeout_s)
        for connection in list(self.connections):
            if connection.handler is None and not connection.aiohttp_answering:
                connection.transport.close()


class Connection(asyncio.Protocol):
    """One client connection. It frames each request; serves a plain events POST itself and
    passes any other on to aiohttp, one request at a time, until one it cannot frame gives
    aiohttp the connection for good."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport
        self.client = "?"
        self.buffer = bytearray()
        self.head: Head | None = None  # an events request's head, its body not yet whole
        self.serving: asyncio.Task[None] | None = None
        self.passing: PassedOn | None = None  # aiohttp's, for the requests passed on
        self.aiohttp_answering = False  # a request passed on and not yet answered
        self.body_left = 0  # of the request passed on, bytes still to come from the client
        self.handler: RequestHandler | None = None  # aiohttp's, once it has the connection
        self.waiting_since = self.loop.time()  # for a head (idle) or for a body
        self.reading = True
        self.writable = True

    @property
    def busy(self) -> bool:
        """A request is being answered: the next one waits."""
        return self.serving is not None or self.aiohttp_answering

    # --- asyncio's calls ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self.listener.admit(self):
            transport.close()
        elif self.listener.events is None:
            self._hand_over()

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
            return
        if self.body_left:  # the body of a request passed on: streamed, never held here
            part = data[: self.body_left]
            self.body_left -= len(part)
            assert self.passing is not None
            self.passing.data_received(part)
            data = data[len(part) :]
        self.buffer += data
        if not self.busy:
            self._next()
        if (self.busy or not self.writable) and self.reading and len(self.buffer) > BUFFERED:
            self._pause_reading()

    def eof_received(self) -> bool | None:
        if self.handler is not None:
            self.handler.eof_received()
        return None  # closes; a request in flight is still written, its answer is lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.forget(self)
        for aiohttp_protocol in (self.passing, self.handler):
            if aiohttp_protocol is not None:
                aiohttp_protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.writable = False  # a client not reading its answers: no more requests
        for aiohttp_protocol in (self.passing, self.handler):
            if aiohttp_protocol is not None:
                aiohttp_protocol.pause_writing()

    def resume_writing(self) -> None:
        self.writable = True
        for aiohttp_protocol in (self.passing, self.handler):
            if aiohttp_protocol is not None:
                aiohttp_protocol.resume_writing()
        if not self.busy:
            self._resume()

    # --- requests ---

    def check(self, now: float) -> None:
        """Close a connection that has waited too long for a head, or answer 408 to a body."""
        if self.handler is not None or self.busy or self.transport.is_closing():
            return
        waited = now - self.waiting_since
        if self.head is not None and waited > self.listener.http.body_timeout_s:
            timeout = self.listener.http.body_timeout_s
            reply = error_reply(408, f"the body took more than {timeout:g} s")
            self._respond(reply, self.head.version, keep_alive=False)
        elif self.head is None and waited > self.listener.http.idle_timeout_s:
            self.transport.close()

    def passed_on(self) -> None:
        """aiohttp has written its answer to the request passed on: on to the next one."""
        self.aiohttp_answering = False
        self.waiting_since = self.loop.time()
        self._resume()

    def _next(self) -> None:
        """Answer the next request once it is whole, or pass it on to aiohttp."""
        if not self.writable or self.listener.closing or self.transport.is_closing():
            return
        if self.head is None and not self._read_head():
            return
        head = self.head
        assert head is not None
        assert head.topic is not None
        if len(self.buffer) < head.length:
            return
        body = bytes(self.buffer[: head.length])
        del self.buffer[: head.length]
        self.head = None
        self.serving = self.loop.create_task(self._serve(head.topic, head, body))

    def _read_head(self) -> bool:
        """Take the next head off the buffer: True for an events request (its body may not
        be whole yet); False when there is none yet, or it went to aiohttp."""
        buffer = self.buffer
        end = buffer.find(HEAD_END)
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self._hand_over()
            return False
        raw = bytes(buffer[: end + len(HEAD_END)])
        head = parsed_head(raw)
        if head is None:
            self._hand_over()
            return False
        del buffer[: len(raw)]
        if head.topic is None or self.listener.events is None:
            self._pass_on(raw, head.length)
            return False
        if head.length > self.listener.max_body_bytes:
            self._respond(self.listener.events.too_large(), head.version, keep_alive=False)
            return False
        self.head = head
        self.waiting_since = self.loop.time()
        return True

    async def _serve(self, topic: str, head: Head, body: bytes) -> None:
        try:
            reply = await self.listener.answer(topic, head, body)
        except Exception:  # answer() answers every refusal: this is a bug, said once
            log.exception("an events request failed", topic=topic)
            reply = error_reply(500, "the events could not be ingested")
        finally:
            self.serving = None
        self._respond(reply, head.version, head.keep_alive)
        self.waiting_since = self.loop.time()
        self._resume()

    def _resume(self) -> None:
        """After an answer: read again, and serve what came meanwhile."""
        if not self.reading and not self.transport.is_closing():
            self._resume_reading()
        if self.buffer:
            self._next()

    def _respond(self, reply: Reply, version: bytes, keep_alive: bool) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(_rendered(reply, version, keep_alive, self.listener.date()))
        if not keep_alive:
            self.transport.close()

    def _pass_on(self, head: bytes, length: int) -> None:
        """aiohttp answers this request: its head now, its body as it comes."""
        if self.passing is None:
            self.passing = PassedOn(self.listener.handover, self)
            self.passing.connection_made(self.transport)
        self.aiohttp_answering = True
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        self.body_left = length - len(body)
        self.passing.data_received(head + body)

    def _hand_over(self) -> None:
        """aiohttp has the connection for good, from the bytes in the buffer on."""
        if self.passing is not None:  # idle: what it passed on is answered
            self.passing.transport = None  # else it closes the connection as it goes
            self.passing.connection_lost(None)
            self.passing = None
        handler = self.listener.handover()
        handler._max_msg_queue_size = PIPELINED
        self.handler = handler
        handler.connection_made(self.transport)
        if not self.reading:
            self._resume_reading()
        if self.buffer:
            data, self.buffer = bytes(self.buffer), bytearray()
            handler.data_received(data)

    def _pause_reading(self) -> None:
        self.reading = False
        self.transport.pause_reading()

    def _resume_reading(self) -> None:
        self.reading = True
        self.transport.resume_reading()


class PassedOn(RequestHandler):
    """aiohttp's protocol for the requests a connection passes on, one at a time: it tells
    the connection when each answer is written. Its idle timer is off: the listener's
    counts for the whole connection, events requests included."""

    def __init__(self, server: web.Server, connection: Connection) -> None:
        super().__init__(server, loop=connection.loop, keepalive_timeout=NEVER, **QUIET)
        self.connection = connection

    async def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.connection.passed_on()


def _rendered(reply: Reply, version: bytes, keep_alive: bool, date: bytes) -> bytes:
    status = HTTPStatus(reply.status)
    lines = [
        b"HTTP/%s %d %s" % (version, status.value, status.phrase.encode()),
        b"Content-Type: application/json; charset=utf-8",
        b"Content-Length: %d" % len(reply.body),
        b"Date: " + date,
    ]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in reply.headers]
    if not keep_alive:
        lines.append(b"Connection: close")
    elif version == b"1.0":
        lines.append(b"Connection: keep-alive")
    return b"\r\n".join(lines) + HEAD_END + reply.body


class ListenerSite(web.BaseSite):
    """An aiohttp site whose connections the Listener takes first."""

    __slots__ = ("_host", "_port", "_sweep", "bound_port", "listener")

    def __init__(self, runner: web.BaseRunner, listener: Listener, host: str, port: int,
                 ssl_context: Any = None) -> None:  # fmt: skip
        super().__init__(runner, ssl_context=ssl_context)
        self.listener = listener
        self._host, self._port = host, port
        self.bound_port = port
        self._sweep: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.listener, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog
        )
        self.bound_port = int(self._server.sockets[0].getsockname()[1])
        self._sweep = loop.create_task(self.listener.sweep())

    async def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        await super().stop()
        await self.listener.close(timeout_s=5.0)
