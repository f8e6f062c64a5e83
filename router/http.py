"""HTTP ingress and read-only views: POST /events/<topic>, /metrics, /healthz, /readyz, /classes."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.errors import (
    ClassOverloaded,
    DecodeError,
    EventTooLarge,
    InvalidEvent,
    RefusedEvents,
    kind_of,
)
from router.ingest import check_batch_size, decode_body
from router.transport import UNAVAILABLE

if TYPE_CHECKING:
    from router.app import Service

RETRY_AFTER_S = "1"
LISTED_PROBLEMS = 20
log = structlog.get_logger("switchyard.http")


def build_app(service: Service) -> web.Application:
    """The aiohttp application serving `service`."""
    # Bounds the body as read, after decompression: a small gzip body cannot inflate past it.
    app = web.Application(client_max_size=service.config.service.max_body_bytes)
    views = _Views(service)
    app.router.add_post("/events/{topic:.+}", views.post_events)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/classes", views.classes)
    return app


def build_worker_app(service: Service) -> web.Application:
    """What a lane worker answers its parent: its own metrics, readiness and pools."""
    app = web.Application()
    views = _Views(service)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/classes", views.pools)
    return app


class _Views:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def post_events(self, request: web.Request) -> web.Response:
        """Route a JSON or msgpack body exactly like an MQTT message on the same topic."""
        service = self.service
        topic = request.match_info["topic"]
        try:
            payloads = await self._payloads(request)
            accepted = await service.ingest.accept(topic, payloads, source="http")
        except (DecodeError, InvalidEvent, EventTooLarge, ClassOverloaded) as exc:
            return self._refusal(exc)
        except RefusedEvents as exc:
            return _refused_events(exc)
        except UNAVAILABLE as exc:
            service.metrics.redis_errors.labels("publish").inc()
            log.warning("redis unavailable, refusing events", topic=topic, error=str(exc))
            reason = "the event store is unavailable, retry later"
            return _error(503, reason, {"Retry-After": RETRY_AFTER_S})
        except Exception:
            log.exception("events could not be ingested", topic=topic)
            return _error(500, "the events could not be ingested; nothing was written")
        body = orjson.dumps({"accepted": [a.as_json() for a in accepted]})
        return web.Response(body=body, status=202, content_type="application/json")

    async def _payloads(self, request: web.Request) -> list[Any]:
        limits = self.service.config.service
        try:
            body = await request.read()  # stops once past max_body_bytes
        except web.HTTPRequestEntityTooLarge:
            raise EventTooLarge(None, limits.max_body_bytes) from None
        encoding = request.headers.get("Content-Encoding", "identity")
        body = inflated(body, encoding, limits.max_body_bytes)
        return check_batch_size(decode_body(body, request.content_type), limits.max_batch_events)

    def _refusal(self, exc: Exception) -> web.Response:
        """The answer to a body that holds no events we can take, counted by reason."""
        rejected = self.service.metrics.rejected
        if isinstance(exc, ClassOverloaded):
            return _error(503, str(exc), {"Retry-After": RETRY_AFTER_S})
        if isinstance(exc, EventTooLarge):
            rejected.labels("too_large").inc()
            return _error(413, str(exc))
        reason = "decode_error" if isinstance(exc, DecodeError) else "invalid"
        rejected.labels(reason).inc()
        return _error(400, str(exc))

    async def metrics(self, request: web.Request) -> web.Response:
        body = await self.service.exposition()  # with its lane workers' metrics merged in
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = await self.service.readiness_problems()
        status = 503 if problems else 200
        return web.json_response({"ready": not problems, "problems": problems}, status=status)

    async def classes(self, request: web.Request) -> web.Response:
        return web.json_response(await self.service.class_views())

    async def pools(self, request: web.Request) -> web.Response:
        """This process's pools alone: no Redis round trip (a worker's parent adds those)."""
        pools = self.service.pools.items()
        return web.json_response({name: pool.snapshot() for name, pool in pools})


def inflated(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decompressed (gzip or deflate), never to more than `limit` bytes: past it,
    EventTooLarge, having held at most `limit` bytes of output."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise DecodeError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib, told by the header
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecodeError(f"body is not valid {encoding}: {exc}") from exc
    if len(out) > limit:
        raise EventTooLarge(None, limit)
    if not inflater.eof:
        raise DecodeError(f"body is not valid {encoding}: it ends before its end")
    return out


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


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (to clean up) and the bound port (useful when port=0)."""
    # Bodies are inflated here, within max_body_bytes (`inflated`), not by aiohttp: it inflates
    # what has arrived before it checks the size, tens of MB for a small gzip body.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])
