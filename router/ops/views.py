"""The read-only HTTP views of a running process: /metrics, /healthz, /readyz, /classes.

They ask an `Observed` process (the service, or a lane worker) for what they show, so this
module knows nothing of how a process is put together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from collections.abc import Mapping


class Observed(Protocol):
    """What a running process tells its views."""

    async def exposition(self) -> bytes:
        """Prometheus metrics in the text format."""
        ...

    async def readiness_problems(self) -> list[str]:
        """Why the process should not receive traffic now; empty when ready."""
        ...

    async def class_views(self) -> Mapping[str, Any]:
        """Per class: settings and live figures."""
        ...

    def pool_views(self) -> Mapping[str, Any]:
        """This process's own pools, with no Redis round trip."""
        ...


class Views:
    """aiohttp handlers over an `Observed` process."""

    def __init__(self, observed: Observed) -> None:
        self.observed = observed

    async def metrics(self, request: web.Request) -> web.Response:
        body = await self.observed.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = await self.observed.readiness_problems()
        status = 503 if problems else 200
        return web.json_response({"ready": not problems, "problems": problems}, status=status)

    async def classes(self, request: web.Request) -> web.Response:
        return web.json_response(await self.observed.class_views())

    async def pools(self, request: web.Request) -> web.Response:
        """This process's pools alone (a lane worker's parent adds the stream figures)."""
        return web.json_response(self.observed.pool_views())
