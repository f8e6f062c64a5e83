"""The read-only HTTP views of a running process: /metrics, /healthz, /readyz, /classes.

They ask an `Observed` process (the service, or a lane worker) for what they show, so this
module knows nothing of how a process is put together.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.redaction import scrub

if TYPE_CHECKING:
    from collections.abc import Mapping


METRICS_HEADERS = {"Content-Type": CONTENT_TYPE_LATEST}


class Observed(Protocol):
    """What a running process tells its views."""

    async def exposition(self) -> bytes:
        """Prometheus metrics in the text format."""
        ...

    async def readiness_problems(self) -> list[str]:
        """Why the process should not receive traffic now; empty when ready."""
        ...

    def config_said(self) -> Mapping[str, Any]:
        """The config the process runs (its hash and generation), for /readyz."""
        ...

    async def class_views(self) -> Mapping[str, Any]:
        """Per class: settings and live figures."""
        ...

    def pool_views(self) -> Mapping[str, Any]:
        """This process's own pools, with no Redis round trip."""
        ...


class Views:
    """aiohttp handlers over an `Observed` process. `/metrics` is rendered at most once every
    `metrics_every_s` and shared, so N scrapers cost one rendering (0: each its own)."""

    def __init__(self, observed: Observed, metrics_every_s: float = 0.0) -> None:
        self.observed = observed
        self.metrics_every_s = metrics_every_s
        self._rendering = asyncio.Lock()
        self._rendered: tuple[float, bytes] = (-math.inf, b"")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=await self._exposition(), headers=METRICS_HEADERS)

    async def _exposition(self) -> bytes:
        if not self.metrics_every_s:
            return await self.observed.exposition()
        async with self._rendering:  # a scrape that waited gets the rendering it waited for
            at, body = self._rendered
            now = time.monotonic()
            if now - at >= self.metrics_every_s:
                body = await self.observed.exposition()
                self._rendered = (now, body)
        return body

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = [scrub(problem) for problem in await self.observed.readiness_problems()]
        status = 503 if problems else 200
        said = {"ready": not problems, "problems": problems, "config": self.observed.config_said()}
        return web.json_response(said, status=status)

    async def classes(self, request: web.Request) -> web.Response:
        return web.json_response(await self.observed.class_views())

    async def pools(self, request: web.Request) -> web.Response:
        """This process's pools alone (a lane worker's parent adds the stream figures)."""
        return web.json_response(self.observed.pool_views())
