"""HTTP ingress and read-only views: POST /events/<topic>, /metrics, /healthz, /readyz, /classes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.errors import ClassOverloaded, DecodeError, EventTooLarge, InvalidEvent
from router.ingest import decode_body
from router.transport import UNAVAILABLE

if TYPE_CHECKING:
    from router.app import Service

RETRY_AFTER_S = "1"
log = structlog.get_logger("switchyard.http")


def build_app(service: Service) -> web.Application:
    """The aiohttp application serving `service`."""
    limits = service.config.service
    app = web.Application(client_max_size=limits.max_event_bytes * limits.max_batch_events)
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
        except UNAVAILABLE as exc:
            service.metrics.redis_errors.labels("publish").inc()
            log.warning("redis unavailable, refusing events", topic=topic, error=str(exc))
            reason = "the event store is unavailable, retry later"
            return _error(503, reason, {"Retry-After": RETRY_AFTER_S})
        body = orjson.dumps({"accepted": [a.as_json() for a in accepted]})
        return web.Response(body=body, status=202, content_type="application/json")

    async def _payloads(self, request: web.Request) -> list[Any]:
        payloads = decode_body(await request.read(), request.content_type)
        limit = self.service.config.service.max_batch_events
        if len(payloads) > limit:
            raise EventTooLarge(len(payloads), limit, batch=True)
        return payloads

    def _refusal(self, exc: Exception) -> web.Response:
        """The answer to a body we will not take, counted by reason."""
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


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (to clean up) and the bound port (useful when port=0)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])
