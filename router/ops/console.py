"""The live console: `GET /ui`, a page served by the service itself (no CDN), and what it
polls and does:

- `GET /ui/state`: per class its rate, p50/p99, SLA compliance and burn (from every
  instance's report), backlog, pending, delayed, oldest age and dead letters; the lanes with
  their shares; the instances with their config; the MQTT state;
- `GET /ui/dead-letters/<class>`: the class's dead letters, newest last (at most `PAGE`);
- `POST /ui/dead-letters/<class>/replay` (`{"ids": [...]}` or `{"all": true}`): put them
  back into the class stream, attempts reset. A write: with tokens, it needs an admin one.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from router.ops.status import read_reports
from router.redaction import redact_url
from router.streams import keys
from router.streams.deadletters import DeadLetters

if TYPE_CHECKING:
    from collections.abc import Mapping

    from router.config import Config
    from router.streams.client import RedisClient
    from router.streams.deadletters import DeadLetter
    from router.streams.transport import StreamStats, Transport

PAGE = 100
HTML = resources.files("router.ops").joinpath("static/console.html").read_text()


class Consoled(Protocol):
    """What the console reads of a running service."""

    @property
    def config(self) -> Config: ...
    @property
    def stats(self) -> Mapping[str, StreamStats]: ...
    @property
    def config_hash(self) -> str: ...
    @property
    def config_generation(self) -> int: ...

    def lanes_now(self) -> dict[str, dict[str, int]]:
        """Per lane: slots used, waiting, reserved (this process)."""
        ...

    def mqtt_now(self) -> dict[str, Any]:
        """The MQTT ingress: whether it is connected, and to which broker."""
        ...


class ConsoleViews:
    """aiohttp handlers of the console."""

    def __init__(self, service: Consoled, redis: RedisClient, transport: Transport) -> None:
        self.service = service
        self.redis = redis
        self.transport = transport

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ui", self.page)
        app.router.add_get("/ui/state", self.state)
        app.router.add_get("/ui/dead-letters/{cls}", self.dead_letters)
        app.router.add_post("/ui/dead-letters/{cls}/replay", self.replay)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=HTML, content_type="text/html")

    async def state(self, request: web.Request) -> web.Response:
        service = self.service
        reports = await read_reports(self.redis)
        return web.json_response({
            "at": time.time(),
            "config": {"hash": service.config_hash, "generation": service.config_generation},
            "classes": _classes(service.config, service.stats, reports),
            "lanes": _lanes(service.config, service.lanes_now()),
            "instances": [
                {"name": name, "config": report.get("config"), "at": report.get("at")}
                for name, report in sorted(reports.items())
            ],
            "mqtt": service.mqtt_now(),
        })  # fmt: skip

    async def dead_letters(self, request: web.Request) -> web.Response:
        cls = self._class(request)
        found: list[DeadLetter] = []
        for letters in self._letters(cls):
            found += await letters.newest(PAGE)
        found = sorted(found, key=_entry_order)[-PAGE:]
        return web.json_response(
            {"class": cls, "letters": [_shown(letter) for letter in found]}, dumps=_dumps
        )

    async def replay(self, request: web.Request) -> web.Response:
        cls = self._class(request)
        try:
            asked = await request.json()
        except ValueError:
            raise _bad('the body is JSON: {"ids": [...]} or {"all": true}') from None
        wanted = asked.get("ids") if isinstance(asked, dict) else None
        every = isinstance(asked, dict) and asked.get("all") is True
        if not every and not (isinstance(wanted, list) and all(isinstance(i, str) for i in wanted)):
            raise _bad('say which: {"ids": [entry ids]} or {"all": true}')
        replayed, skipped = 0, list[str]()
        for letters in self._letters(cls):
            async for page in letters.chosen(None if every else wanted):
                moved, missed = await letters.replay(page)
                replayed, skipped = replayed + moved, skipped + missed
        return web.json_response({"class": cls, "replayed": replayed, "skipped": skipped})

    def _class(self, request: web.Request) -> str:
        cls = request.match_info["cls"]
        if cls not in self.service.config.classes:
            raise web.HTTPNotFound(text=f'{{"error": "no class {cls[:80]!r}"}}',
                                   content_type="application/json")  # fmt: skip
        return cls

    def _letters(self, cls: str) -> list[DeadLetters]:
        partitions = self.service.config.classes[cls].partitions
        return [DeadLetters(self.redis, self.transport, t) for t in keys.tags(cls, partitions)]


def _classes(
    config: Config, stats: Mapping[str, StreamStats], reports: Mapping[str, Any]
) -> list[dict[str, Any]]:
    now = time.time()
    rows = []
    for name, cls in config.classes_by_lane():
        mine = [r["classes"][name] for r in reports.values() if name in r.get("classes", {})]
        figures = stats.get(name)
        compliance = min((m["compliance"] for m in mine), default=1.0)
        objective = cls.sla.objective if cls.sla else None
        burn = (
            (1 - compliance) / (1 - objective) if objective is not None and objective < 1 else None
        )
        rows.append({
            "class": name, "lane": cls.lane, "mode": cls.mode, "concurrency": cls.concurrency,
            "rate": sum(m["rate"] for m in mine),
            "p50_s": max((m["p50_s"] for m in mine if m["p50_s"] is not None), default=None),
            "p99_s": max((m["p99_s"] for m in mine if m["p99_s"] is not None), default=None),
            "sla_target_s": cls.sla.target_ms / 1000 if cls.sla else None,
            "compliance": compliance if cls.sla else None, "burn": burn,
            "backlog": figures.backlog if figures else 0,
            "pending": figures.pending if figures else 0,
            "delayed": figures.delayed if figures else 0,
            "oldest_s": now - figures.oldest_ms / 1000 if figures and figures.oldest_ms else None,
            "dead_letters": figures.dead_letters if figures else 0,
        })  # fmt: skip
    return rows


def _lanes(config: Config, here: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    idle = {"used": 0, "waiting": 0, "min_slots": 0}
    return [
        {"lane": lane.name, "workers": lane.workers, "min_share": lane.min_share,
         **here.get(lane.name, idle)}
        for lane in config.lanes
    ]  # fmt: skip


def _shown(letter: DeadLetter) -> dict[str, Any]:
    fields = letter.summary()
    fields.pop("envelope", None)
    fields.pop("traceback", None)
    return fields


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def broker_said(url: str | None, connected: bool) -> dict[str, Any]:
    """The MQTT state as the console shows it: the broker (its password masked), connected."""
    return {"broker": redact_url(url) if url else None, "connected": connected}


def _entry_order(letter: DeadLetter) -> tuple[int, ...]:
    """Stream ids in time order (as text, "…-10" would sort before "…-9")."""
    return tuple(int(part) for part in letter.entry_id.split("-"))
