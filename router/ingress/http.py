"""HTTP ingress: `POST /events/<topic>`, routed exactly like an MQTT message on that topic.

202 only once the events are in Redis. A request is taken whole or not at all: 400 for a
body that holds no events, 422 naming each event that cannot be taken, 413 past a size limit,
503 with Retry-After while Redis is away or refusing writes or the class is shedding load.

`EventsEndpoint.answer` is the endpoint whatever carries the request: the service's listener
(`router.ingress.listener`) calls it straight from the connection; aiohttp calls it through
`post_events` for the requests the listener hands over (a chunked body, say).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NamedTuple

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from router.errors import (
    ClassOverloaded,
    DecodeError,
    EventTooLarge,
    InvalidEvent,
    RefusedEvents,
    WriteRefused,
    kind_of,
)
from router.ingress.decode import check_batch_size, decode_body, inflated
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from router.config import ServiceConfig
    from router.ingress.ingest import Ingest
    from router.metrics import Metrics

RETRY_AFTER_S = "1"
LISTED_PROBLEMS = 20
log = structlog.get_logger("switchyard.http")


class Reply(NamedTuple):
    """An answer of the events endpoint: a JSON body, its status and any extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class EventsEndpoint:
    """`POST /events/<topic>`: a body's events into their classes, and the answer."""

    def __init__(
        self, ingest: Ingest, metrics: Metrics, limits: ServiceConfig, body_timeout_s: float = 30.0
    ) -> None:
        self.ingest = ingest
        self.metrics = metrics
        self.limits = limits
        self.body_timeout_s = body_timeout_s  # a body that takes longer: 408, nothing written

    async def answer(
        self, topic: str, body: bytes, content_type: str, encoding: str = "identity"
    ) -> Reply:
        """Route a JSON or msgpack body exactly like an MQTT message on the same topic."""
        limits = self.limits
        try:
            body = inflated(body, encoding, limits.max_body_bytes)
            payloads = decode_body(body, content_type)
            payloads = check_batch_size(payloads, limits.max_batch_events)
            accepted = await self.ingest.accept(topic, payloads, source="http")
        except (DecodeError, InvalidEvent, EventTooLarge, ClassOverloaded) as exc:
            return self.refusal(exc)
        except RefusedEvents as exc:
            return _refused_events(exc)
        except WriteRefused as exc:
            log.warning("redis refused events", topic=topic, error=str(exc.error))
            refused = [{"id": event_id, "index": index} for event_id, index in exc.refused]
            reply = {"error": f"{exc}; the other events were written", "refused": refused}
            return Reply(500, orjson.dumps(reply))
        except UNAVAILABLE as exc:
            self.metrics.redis_errors.labels("publish").inc()
            log.warning("redis unavailable, refusing events", topic=topic, error=str(exc))
            reason = "the event store is unavailable, retry later"
            return error_reply(503, reason, (("Retry-After", RETRY_AFTER_S),))
        except Exception:
            log.exception("events could not be ingested", topic=topic)
            return error_reply(500, "the events could not be ingested; nothing was written")
        return Reply(202, orjson.dumps({"accepted": [a.as_json() for a in accepted]}))

    def refusal(self, exc: Exception) -> Reply:
        """The answer to a body that holds no events we can take, counted by reason."""
        rejected = self.metrics.rejected
        if isinstance(exc, ClassOverloaded):
            return error_reply(503, str(exc), (("Retry-After", RETRY_AFTER_S),))
        if isinstance(exc, EventTooLarge):
            rejected.labels("too_large").inc()
            return error_reply(413, str(exc))
        reason = "decode_error" if isinstance(exc, DecodeError) else "invalid"
        rejected.labels(reason).inc()
        return error_reply(400, str(exc))

    def too_large(self) -> Reply:
        """413 for a body past `max_body_bytes`, counted."""
        return self.refusal(EventTooLarge(None, self.limits.max_body_bytes))

    async def post_events(self, request: web.Request) -> web.Response:
        """The endpoint as an aiohttp handler, for the requests the listener hands over."""
        try:
            body = await self._body(request)
        except (DecodeError, EventTooLarge) as exc:
            reply = self.refusal(exc)
        else:
            encoding = request.headers.get("Content-Encoding", "identity")
            reply = await self.answer(
                request.match_info["topic"], body, request.content_type, encoding
            )
        return web.Response(
            body=reply.body, status=reply.status, headers=dict(reply.headers),
            content_type="application/json",
        )  # fmt: skip

    async def _body(self, request: web.Request) -> bytes:
        try:
            if request.content.is_eof():  # the whole body came with the headers: no wait
                return await request.read()
            async with asyncio.timeout(self.body_timeout_s):
                return await request.read()  # stops once past max_body_bytes
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"the body took more than {self.body_timeout_s:g} s",
                headers={"Connection": "close"},
            ) from None
        except web.HTTPRequestEntityTooLarge:
            raise EventTooLarge(None, self.limits.max_body_bytes) from None
        except (RequestPayloadError, HttpProcessingError) as exc:  # a broken body or transfer
            raise DecodeError(f"the body could not be read: {exc}") from exc


def _refused_events(exc: RefusedEvents) -> Reply:
    """413 when an event is too large, 500 when Switchyard failed on one, else 422; the body
    names each event by its index (the first LISTED_PROBLEMS of them)."""
    kinds = exc.kinds
    status = 413 if "too_large" in kinds else 500 if "internal_error" in kinds else 422
    events = [
        {"index": index, "reason": kind_of(problem), "error": str(problem)}
        for index, problem in exc.problems[:LISTED_PROBLEMS]
    ]
    return Reply(status, orjson.dumps({"error": f"nothing was written: {exc}", "events": events}))


def error_reply(status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A refusal: `{"error": reason}`."""
    return Reply(status, orjson.dumps({"error": reason}), headers)
