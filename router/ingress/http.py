"""HTTP ingress: `POST /events/<topic>`, routed exactly like an MQTT message on that topic.

202 only once the events are in Redis. A request is taken whole or not at all: 400 for a
body that holds no events, 422 naming each event that cannot be taken, 413 past a size limit,
503 with Retry-After while Redis is away or refusing writes or the class is shedding load.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

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


class EventsEndpoint:
    """The handler of `POST /events/<topic>`."""

    def __init__(
        self, ingest: Ingest, metrics: Metrics, limits: ServiceConfig, body_timeout_s: float = 30.0
    ) -> None:
        self.ingest = ingest
        self.metrics = metrics
        self.limits = limits
        self.body_timeout_s = body_timeout_s  # a body that takes longer: 408, nothing written

    async def post_events(self, request: web.Request) -> web.Response:
        """Route a JSON or msgpack body exactly like an MQTT message on the same topic."""
        topic = request.match_info["topic"]
        try:
            payloads = await self._payloads(request)
            accepted = await self.ingest.accept(topic, payloads, source="http")
        except (DecodeError, InvalidEvent, EventTooLarge, ClassOverloaded) as exc:
            return self._refusal(exc)
        except RefusedEvents as exc:
            return _refused_events(exc)
        except WriteRefused as exc:
            log.warning("redis refused events", topic=topic, error=str(exc.error))
            refused = [{"id": event_id, "index": index} for event_id, index in exc.refused]
            reply = {"error": f"{exc}; the other events were written", "refused": refused}
            return web.json_response(reply, status=500)
        except UNAVAILABLE as exc:
            self.metrics.redis_errors.labels("publish").inc()
            log.warning("redis unavailable, refusing events", topic=topic, error=str(exc))
            reason = "the event store is unavailable, retry later"
            return _error(503, reason, {"Retry-After": RETRY_AFTER_S})
        except web.HTTPException:  # answered already: a body too slow
            raise
        except Exception:
            log.exception("events could not be ingested", topic=topic)
            return _error(500, "the events could not be ingested; nothing was written")
        body = orjson.dumps({"accepted": [a.as_json() for a in accepted]})
        return web.Response(body=body, status=202, content_type="application/json")

    async def _payloads(self, request: web.Request) -> list[Any]:
        limits = self.limits
        try:
            if request.content.is_eof():  # the whole body came with the headers: no wait
                body = await request.read()
            else:
                async with asyncio.timeout(self.body_timeout_s):
                    body = await request.read()  # stops once past max_body_bytes
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"the body took more than {self.body_timeout_s:g} s",
                headers={"Connection": "close"},
            ) from None
        except web.HTTPRequestEntityTooLarge:
            raise EventTooLarge(None, limits.max_body_bytes) from None
        except (RequestPayloadError, HttpProcessingError) as exc:  # a broken body or transfer
            raise DecodeError(f"the body could not be read: {exc}") from exc
        encoding = request.headers.get("Content-Encoding", "identity")
        body = inflated(body, encoding, limits.max_body_bytes)
        return check_batch_size(decode_body(body, request.content_type), limits.max_batch_events)

    def _refusal(self, exc: Exception) -> web.Response:
        """The answer to a body that holds no events we can take, counted by reason."""
        rejected = self.metrics.rejected
        if isinstance(exc, ClassOverloaded):
            return _error(503, str(exc), {"Retry-After": RETRY_AFTER_S})
        if isinstance(exc, EventTooLarge):
            rejected.labels("too_large").inc()
            return _error(413, str(exc))
        reason = "decode_error" if isinstance(exc, DecodeError) else "invalid"
        rejected.labels(reason).inc()
        return _error(400, str(exc))


def _refused_events(exc: RefusedEvents) -> web.Response:
    """413 when an event is too large, 500 when Switchyard failed on one, else 422; the body
    names each event by its index (the first LISTED_PROBLEMS of them)."""
    kinds = exc.kinds
    status = 413 if "too_large" in kinds else 500 if "internal_error" in kinds else 422
    events = [
        {"index": index, "reason": kind_of(problem), "error": str(problem)}
        for index, problem in exc.problems[:LISTED_PROBLEMS]
    ]
    body = {"error": f"nothing was written: {exc}", "events": events}
    return web.json_response(body, status=status)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)
