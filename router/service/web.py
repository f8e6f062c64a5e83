"""The HTTP side of a process: the service's ingress and views, or a lane worker's views for
its parent, on one aiohttp runner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.ops.views import Views

if TYPE_CHECKING:
    from router.ingress.http import EventsEndpoint
    from router.ops.analytics_http import AnalyticsViews
    from router.ops.views import Observed

# Bodies are inflated by Switchyard within max_body_bytes (`router.ingress.decode.inflated`),
# not by aiohttp: it inflates what has arrived before it checks the size, tens of MB for a
# small gzip body. No access log: a line per request is the ingest path's largest cost.
RUNNER_OPTIONS: dict[str, Any] = {
    "access_log": None,
    "handle_signals": False,
    "auto_decompress": False,
}


def service_app(
    events: EventsEndpoint,
    observed: Observed,
    max_body_bytes: int,
    analytics: AnalyticsViews | None = None,
) -> web.Application:
    """POST /events, and the views: what the service serves."""
    # Bounds the body as read; Switchyard inflates it itself, within the same bound.
    app = web.Application(client_max_size=max_body_bytes)
    views = Views(observed)
    app.router.add_post("/events/{topic:.+}", events.post_events)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/classes", views.classes)
    if analytics is not None:
        analytics.add_routes(app)
    return app


def worker_app(observed: Observed) -> web.Application:
    """What a lane worker answers its parent: its own metrics, readiness and pools."""
    app = web.Application()
    views = Views(observed)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/classes", views.pools)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (to clean up) and the bound port (useful when port=0)."""
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])
