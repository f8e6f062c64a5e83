"""The clinic's views over HTTP, as `switchyard clinic ...` on the command line:
`GET /clinic` (the board, a page that refreshes itself), `GET /clinic/board` (everything the
page shows, as JSON: the stations, the day's summary, who is under observation, who needs
attention) and `GET /clinic/patients/<id>` (one patient's journey).

All are the clinic's analytics questions (`/analytics/clinic/<question>`), answered by the
configured provider: the engine never imports the actors.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from router.ops.analytics import Query
from router.ops.pages import page

if TYPE_CHECKING:
    from router.ops.analytics_http import AnalyticsViews

WORKLOAD = "clinic"
BOARD = ("board", "summary", "observation", "attention")
PAGE = page("clinic.html")


class ClinicViews:
    """aiohttp handlers over the clinic's analytics provider (none configured: no routes)."""

    def __init__(self, analytics: AnalyticsViews) -> None:
        self.analytics = analytics

    def add_routes(self, app: web.Application) -> None:
        if WORKLOAD not in self.analytics.providers:
            return
        app.router.add_get(f"/{WORKLOAD}", self.page)
        app.router.add_get(f"/{WORKLOAD}/board", self.board)
        app.router.add_get(f"/{WORKLOAD}/patients/{{patient}}", self.patient)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def board(self, request: web.Request) -> web.Response:
        answers = await asyncio.gather(
            *(self.analytics.ask(WORKLOAD, question, Query()) for question in BOARD)
        )
        return web.json_response(
            {question: answer.to_json() for question, answer in zip(BOARD, answers, strict=True)}
        )

    async def patient(self, request: web.Request) -> web.Response:
        query = Query(user=request.match_info["patient"])
        found = await self.analytics.ask(WORKLOAD, "patient", query)
        return web.json_response(found.to_json())
