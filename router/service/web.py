"""The HTTP side of a process: the service's ingress and views, or a lane worker's views for
its parent, on one aiohttp runner."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.ingress.access import Access
from router.ingress.listener import Listener, ListenerSite
from router.ops.views import Views

if TYPE_CHECKING:
    from router.config import HttpConfig
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
    http: HttpConfig,
    max_body_bytes: int,
    *,
    analytics: AnalyticsViews | None = None,
    access: Access | None = None,
) -> web.Application:
    """POST /events, and the views: what the service serves, behind its tokens if any."""
    access = access if access is not None else Access.from_config(http.tokens)
    # Bounds the body as read; Switchyard inflates it itself, within the same bound.
    app = web.Application(
        client_max_size=max_body_bytes, middlewares=[] if access.open else [access.middleware()]
    )
    views = Views(observed, http.metrics_every_s)
    app.router.add_post("/events/{topic:.+}", events.post_events)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/classes", views.classes)
    if analytics is not None:
        analytics.add_routes(app)
    return app


def metrics_app(observed: Observed, every_s: float) -> web.Application:
    """The metrics listener, for Prometheus on a private address: open, and nothing else."""
    app = web.Application()
    views = Views(observed, every_s)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    return app


def worker_app(observed: Observed) -> web.Application:
    """What a lane worker answers its parent: its own metrics, readiness and pools."""
    app = web.Application()
    views = Views(observed)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/classes", views.pools)
    return app


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    limits: HttpConfig | None = None,
    events: tuple[EventsEndpoint, Access] | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (to clean up) and the bound port (useful when port=0).

    With `limits`, the connections go through a `Listener`, which keeps the limits of
    `HttpConfig` (idle and body timeouts, connections per client) and, given `events` (the
    endpoint and who may post), serves `POST /events/<topic>` itself.
    """
    options: dict[str, Any] = {"keepalive_timeout": limits.idle_timeout_s} if limits else {}
    runner = web.AppRunner(app, **RUNNER_OPTIONS, **options)
    await runner.setup()
    if limits is None:
        site: web.BaseSite = web.TCPSite(runner, host, port)
        await site.start()
        return runner, int(runner.addresses[0][1])
    assert runner.server is not None
    listener = Listener(limits, runner.server, *(events or ()))
    listening = ListenerSite(runner, listener, host, port, tls_context(limits))
    await listening.start()
    return runner, listening.bound_port


def tls_context(http: HttpConfig | None) -> ssl.SSLContext | None:
    """HTTPS when the config gives a certificate; mutual TLS when it gives a client CA."""
    if http is None or http.cert_file is None or http.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(http.cert_file, http.key_file)
    if http.client_ca_file is not None:
        context.load_verify_locations(http.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
