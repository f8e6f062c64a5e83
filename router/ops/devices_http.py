"""The device registry over HTTP, as `switchyard doorbell device ...` on the command line:
`GET /doorbell/devices` (a page of them), and `GET`, `PUT` (a JSON body: owner, webhook,
backchannel, settings) and `DELETE` on `/doorbell/devices/<id>`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.notify.device import Device, InvalidDevice

if TYPE_CHECKING:
    from router.notify.notifier import Notifier

WORKLOADS = ("doorbell",)  # the workloads whose alerts go to registered devices
PAGE = 1000
MAX_BODY = 16 * 1024


class DeviceViews:
    """aiohttp handlers over the notifier's registries."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def add_routes(self, app: web.Application) -> None:
        for workload in WORKLOADS:
            app.router.add_get(f"/{workload}/devices", self.listing)
            app.router.add_get(f"/{workload}/devices/{{device}}", self.show)
            app.router.add_put(f"/{workload}/devices/{{device}}", self.put)
            app.router.add_delete(f"/{workload}/devices/{{device}}", self.remove)

    async def listing(self, request: web.Request) -> web.Response:
        registry = self.notifier.registry(_workload(request))
        found: list[dict[str, Any]] = []
        async for device in registry.devices():
            if len(found) == PAGE:
                break
            found.append(json.loads(device.to_json()))
        return web.json_response({"count": await registry.count(), "devices": found})

    async def show(self, request: web.Request) -> web.Response:
        device = await self.notifier.registry(_workload(request)).get(request.match_info["device"])
        if device is None:
            raise _error(web.HTTPNotFound, f"no device {request.match_info['device']!r}")
        return web.Response(text=device.to_json(), content_type="application/json")

    async def put(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_BODY:
            raise _error(web.HTTPRequestEntityTooLarge, f"a device is at most {MAX_BODY} bytes")
        try:
            body = json.loads(await request.content.read(MAX_BODY + 1) or b"null")
            device = Device.of(body, device_id=request.match_info["device"])
        except (ValueError, InvalidDevice) as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        new = await self.notifier.registry(_workload(request)).add(device)
        return web.Response(
            status=201 if new else 200, text=device.to_json(), content_type="application/json"
        )

    async def remove(self, request: web.Request) -> web.Response:
        device = request.match_info["device"]
        if not await self.notifier.registry(_workload(request)).remove(device):
            raise _error(web.HTTPNotFound, f"no device {device!r}")
        return web.json_response({"removed": device})


def _workload(request: web.Request) -> str:
    return request.path.split("/", 2)[1]


def _error(kind: type[web.HTTPError], message: str) -> web.HTTPError:
    return kind(text=json.dumps({"error": message}), content_type="application/json")
