"""The HTTP side of a process: the service's ingress and views, or a lane worker's views for
its parent, on one aiohttp runner."""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.ingress.access import Access
from router.ops.views import Views

if TYPE_CHECKING:
    from aiohttp.web_protocol import RequestHandler

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
    analytics: AnalyticsViews | None = None,
) -> web.Application:
    """POST /events, and the views: what the service serves, behind its tokens if any."""
    access = Access.from_config(http.tokens)
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
    app: web.Application, host: str, port: int, limits: HttpConfig | None = None
) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (to clean up) and the bound port (useful when port=0).

    With `limits`, a client has `idle_timeout_s` to send a request (whole headers included:
    a connection that trickles them is closed as idle) and between two requests, and at
    most `max_connections_per_client` connections open at once.
    """
    runner = GuardedRunner(app, limits) if limits else web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls_context(limits)).start()
    return runner, int(runner.addresses[0][1])


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


PIPELINED = 4


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server closes idle connections and caps them per client."""

    def __init__(self, app: web.Application, limits: HttpConfig) -> None:
        super().__init__(app, keepalive_timeout=limits.idle_timeout_s, **RUNNER_OPTIONS)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return CappedServer(
            made.request_handler, request_factory=made.request_factory, loop=made._loop,
            per_client=self.limits.max_connections_per_client, **made._kwargs,
        )  # fmt: skip


class CappedServer(web.Server):
    """Closes a client's connection at once when it already holds `per_client` others."""

    def __init__(self, *args: Any, per_client: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.per_client = per_client
        self.open: Counter[str] = Counter()
        self.refused = 0

    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        # A client pipelining requests it never reads has this many parsed, then its
        # connection stops being read: the rest wait in its socket, not in this process.
        handler._max_msg_queue_size = PIPELINED
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        client = _client(transport)
        self.open[client] += 1
        if self.open[client] > self.per_client:
            self.refused += 1
            # Once the handler has started: closed before, it would fail on a gone manager.
            asyncio.get_running_loop().call_soon(transport.close)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        transport = self._connections.get(handler)
        super().connection_lost(handler, exc)
        if transport is not None:
            client = _client(transport)
            self.open[client] -= 1
            if self.open[client] <= 0:
                del self.open[client]


def _client(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"
