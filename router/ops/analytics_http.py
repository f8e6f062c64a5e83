"""The analytics over HTTP: `GET /analytics` (what each workload answers), `GET
/analytics/<workload>/<question>` (one answer, JSON) and `GET /analytics/<workload>` (a page
that draws every answer: heatmaps and bars).

Answers are worked out in threads (a query over files blocks), at most `CONCURRENT_ANSWERS` at
once; the rest wait, so a burst of page loads cannot pile up threads or memory. A provider
raises `QueryError` for a bad request (400); anything else it raises means the store could not
answer (503, logged).
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from router.ops.analytics import Query, QueryError, answer_of, load_analytics
from router.ops.pages import page

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from router.config import AnalyticsConfig
    from router.ops.analytics import Analytics, Answer, Lookups

CONCURRENT_ANSWERS = 2
log = structlog.get_logger("switchyard.analytics")
PAGE = page("analytics.html")


class AnalyticsViews:
    """aiohttp handlers over the configured workloads' analytics providers."""

    def __init__(
        self,
        configs: Mapping[str, AnalyticsConfig],
        lookups: Callable[[str], Lookups] | None = None,
    ) -> None:
        """`lookups`: a workload's live state in Redis, for the providers that read it."""
        self.providers: dict[str, Analytics] = {
            name: load_analytics(settings, lookups(name) if lookups else None)
            for name, settings in configs.items()
        }
        self._answering = asyncio.Semaphore(CONCURRENT_ANSWERS)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/analytics", self.index)
        app.router.add_get("/analytics/{workload}", self.page)
        app.router.add_get("/analytics/{workload}/{question}", self.answer)

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response(
            {name: provider.questions() for name, provider in self.providers.items()}
        )

    async def page(self, request: web.Request) -> web.Response:
        workload = request.match_info["workload"]
        provider = self._provider(workload)
        body = PAGE.replace("__WORKLOAD__", html.escape(workload)).replace(
            "__QUESTIONS__", html.escape(json.dumps(provider.questions()))
        )
        return web.Response(text=body, content_type="text/html")

    async def answer(self, request: web.Request) -> web.Response:
        workload, question = request.match_info["workload"], request.match_info["question"]
        provider = self._provider(workload)
        if question not in provider.questions():
            raise _error(web.HTTPNotFound, f"{workload} answers no question {question!r}")
        params = request.query
        try:
            query = Query.parse(
                params.get("user"), params.get("since"), params.get("until"), params.get("tz"),
                limit=params.get("limit"), kind=params.get("kind"),
            )  # fmt: skip
        except QueryError as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        found = await self.ask(workload, question, query)
        return web.json_response(found.to_json())

    async def ask(self, workload: str, question: str, query: Query) -> Answer:
        """One answer, worked out in a thread (at most `CONCURRENT_ANSWERS` at once): for
        this page and for the routes that are aliases of a question (`doorbell_http`)."""
        provider = self._provider(workload)
        try:
            async with self._answering:
                return await answer_of(provider, question, query)
        except QueryError as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        except Exception as exc:  # the store, not the request: say so, and stay up
            log.warning("analytics could not answer", workload=workload, question=question,
                        error=repr(exc))  # fmt: skip
            raise _error(
                web.HTTPServiceUnavailable, f"{workload} could not answer: {exc}"
            ) from None

    def _provider(self, workload: str) -> Analytics:
        provider = self.providers.get(workload)
        if provider is None:
            known = ", ".join(sorted(self.providers)) or "none"
            raise _error(web.HTTPNotFound, f"no analytics for {workload!r} (have: {known})")
        return provider


def _error(kind: type[web.HTTPError], message: str) -> web.HTTPError:
    return kind(text=json.dumps({"error": message}), content_type="application/json")
