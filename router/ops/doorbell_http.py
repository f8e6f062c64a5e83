"""A doorbell's timeline and readings over HTTP, as `switchyard doorbell timeline|readings` on
the command line: `GET /doorbell/<device>/timeline?since=1h&until=&limit=` (newest first) and
`GET /doorbell/<device>/readings?since=1h&kind=temperature` (per minute).

Both are aliases of the doorbell's analytics questions (`/analytics/doorbell/timeline?user=
<device>`): the engine never imports the actors, so it reaches their lakes through the
configured analytics provider, which answers in a thread, bounded as every answer is.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from router.ops.analytics import Query, QueryError

if TYPE_CHECKING:
    from router.ops.analytics_http import AnalyticsViews

WORKLOAD = "doorbell"
QUESTIONS = ("timeline", "readings")


class DoorbellViews:
    """aiohttp handlers over the doorbell's analytics provider (none configured: no routes)."""

    def __init__(self, analytics: AnalyticsViews) -> None:
        self.analytics = analytics

    def add_routes(self, app: web.Application) -> None:
        if WORKLOAD not in self.analytics.providers:
            return
        for question in QUESTIONS:
            app.router.add_get(f"/{WORKLOAD}/{{device}}/{question}", self.answer)

    async def answer(self, request: web.Request) -> web.Response:
        question = request.path.rsplit("/", 1)[-1]
        params = request.query
        try:
            query = Query.parse(
                request.match_info["device"], params.get("since"), params.get("until"),
                params.get("tz"), limit=params.get("limit"), kind=params.get("kind"),
            )  # fmt: skip
        except QueryError as exc:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": str(exc)}), content_type="application/json"
            ) from None
        found = await self.analytics.ask(WORKLOAD, question, query)
        return web.json_response(found.to_json())
