"""A tiny webhook receiver: what an owner's side does with a signed alert, runnable locally
(`switchyard doorbell receiver`, and the demo starts one) to watch alerts arrive.

It checks the signature over the exact body (401 when it does not match: a receiver must
never act on an unsigned or forged alert), drops a repeat by `alert_id` (a retry after
another channel failed sends it again), and keeps the last `KEPT` alerts.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from typing import Any

from aiohttp import web

from router.notify.webhook import SIGNATURE_HEADER, signature_matches

KEPT = 1000
MAX_BODY = 64 * 1024


class WebhookReceiver:
    """An aiohttp app at `POST /alerts`; `GET /alerts` lists what arrived."""

    def __init__(self, secret: str, *, echo: bool = False) -> None:
        self.secret = secret
        self.echo = echo  # print a line per alert, for a person watching
        self.alerts: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self.kinds: Counter[str] = Counter()
        self.refused = 0
        self._seen: deque[str] = deque(maxlen=KEPT)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/alerts", self.receive)
        app.router.add_get("/alerts", self.listing)
        return app

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not signature_matches(self.secret, body, request.headers.get(SIGNATURE_HEADER)):
            self.refused += 1
            return web.json_response({"error": "bad signature"}, status=401)
        alert = json.loads(body)
        if alert.get("alert_id") in self._seen:
            return web.json_response({"ok": True, "repeat": True})
        self._seen.append(alert.get("alert_id"))
        self.alerts.append(alert)
        self.kinds[str(alert.get("kind"))] += 1
        if self.echo:
            print(
                f"alert: {alert.get('kind')} at {alert.get('device_id')} "
                f"for {alert.get('owner')} ({alert.get('alert_id')})",
                flush=True,
            )
        return web.json_response({"ok": True})

    async def listing(self, request: web.Request) -> web.Response:
        return web.json_response({"kinds": dict(self.kinds), "alerts": list(self.alerts)})
