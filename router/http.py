"""HTTP ingress and read-only views: POST /events/<topic>, /metrics, /healthz, /readyz, /classes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router.errors import DecodeError, EventTooLarge, InvalidEvent
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


class _Views:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def post_events(self, request: web.Request) -> web.Response:
        """Route a JSON or msgpack body exactly like an MQTT message on the same topic."""
        service = self.service
        limits = service.config.service
        rejected = service.metrics.rejected
        topic = request.match_info["topic"]
        body = await request.read()
        try:
            payloads = decode_body(body, request.content_type)
        except DecodeError as exc:
            rejected.labels("decode_error").inc()
            return _error(400, exc.reason)
        except InvalidEvent as exc:
            rejected.labels("invalid").inc()
            return _error(400, exc.reason)
        if len(payloads) > limits.max_batch_events:
            rejected.labels("too_large").inc()
            return _error(
                413, f"{len(payloads)} events, over the batch limit of {limits.max_batch_events}"
            )
        try:
            accepted = await service.ingest.accept(topic, payloads, source="http")
        except EventTooLarge as exc:
            rejected.labels("too_large").inc()
            return _error(413, str(exc))
        except UNAVAILABLE as exc:
            service.metrics.redis_errors.labels("publish").inc()
            log.warning("redis unavailable, refusing events", topic=topic, error=str(exc))
            return _error(
                503, "the event store is unavailable, retry later", {"Retry-After": RETRY_AFTER_S}
            )
        return web.json_response({"accepted": [a.as_json() for a in accepted]}, status=202)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.service.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = await self.service.readiness_problems()
        status = 503 if problems else 200
        return web.json_response({"ready": not problems, "problems": problems}, status=status)

    async def classes(self, request: web.Request) -> web.Response:
        return web.json_response(await self.service.class_views())


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (to clean up) and the bound port (useful when port=0)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = site._server  # aiohttp exposes no public accessor for the bound socket
    bound = int(server.sockets[0].getsockname()[1]) if server and server.sockets else port
    return runner, bound
