"""The live console (`GET /ui`) in a real headless browser, driven over the DevTools protocol:
the page polls `/ui/state`, its figures move while events flow, and a dead letter is listed and
replayed from it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import aiohttp
import pytest
from helpers import events_url, processed
from servers import wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from helpers import Serve

    from router.config import Config

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs chromium (a real headless browser)"
)

WIDTH, HEIGHT = 1400, 1000
NAMELESS = {"patient_id": "P2", "note": "<img src=x id=pwned>"}  # no name: a dead letter at once


class Chromium:
    """Headless chromium, its one page driven through the Chrome DevTools Protocol (CDP) over
    a websocket: `async with Chromium.launch(http, profile) as page:`."""

    def __init__(self, process: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.process = process
        self.log = log
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self._last_id = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, http: aiohttp.ClientSession, profile: Path) -> AsyncIterator[Chromium]:
        """Start chromium (in a process group of its own) on a debugging port of its choosing,
        attach to its page, and close it, whatever happens, on the way out."""
        log = chromium_log(profile)
        process = await asyncio.create_subprocess_exec(
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--remote-debugging-port=0", f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        browser = cls(process, log)
        try:
            await browser.attach(http, profile)
            yield browser
        finally:
            await browser.close()

    async def attach(self, http: aiohttp.ClientSession, profile: Path) -> None:
        """Find the port chromium chose (its profile's DevToolsActivePort), then its page's
        websocket in /json/list."""
        active = profile / "DevToolsActivePort"
        await wait_for(lambda: active.exists() and active.read_text().strip(), timeout=20)
        base = f"http://127.0.0.1:{int(active.read_text().split()[0])}"

        async def page_target() -> str:
            async with http.get(f"{base}/json/list") as response:
                targets = await response.json()
            pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
            return pages[0] if pages else ""

        url = await wait_for(page_target, timeout=10, interval=0.05)
        self.socket = await http.ws_connect(url, max_msg_size=0)  # screenshots are big
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False,
        )  # fmt: skip

    async def close(self) -> None:
        """Ask chromium to quit, then kill what is left of its process group (renderers too)."""
        if self.socket is not None:
            with contextlib.suppress(Exception):  # it may hang up before it answers
                await self.send("Browser.close")
            await self.socket.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        self.log.close()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command and its result (events arriving meanwhile are ignored)."""
        self._last_id += 1
        asked = self._last_id
        assert self.socket is not None, "not attached"
        await self.socket.send_json({"id": asked, "method": method, "params": params})
        while True:
            message = await self.socket.receive(timeout=15)
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"the DevTools socket said {message.type!r}: {message.data!r}")
            answer = json.loads(message.data)
            if answer.get("id") != asked:
                continue
            if "error" in answer:
                raise AssertionError(f"{method} failed: {answer['error']}")
            result: dict[str, Any] = answer["result"]
            return result

    async def navigate(self, url: str) -> None:
        result = await self.send("Page.navigate", url=url)
        assert not result.get("errorText"), result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(details.get("exception", {}).get("description") or details)
        return result["result"].get("value")

    async def screenshot(self) -> bytes:
        result = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])


def chromium_log(profile: Path) -> IO[bytes]:
    """Where chromium's own output goes: a file in its profile, read after a failure."""
    profile.mkdir(parents=True, exist_ok=True)
    return (profile / "chromium.log").open("wb")


def row(cls: str, cell: str) -> str:
    """JavaScript: the text of one cell of a class's row in the table, or null."""
    selector = json.dumps(f'#classes tr[data-class="{cls}"] td.{cell}')
    return f"document.querySelector({selector})?.textContent ?? null"


async def test_the_console_shows_live_figures_and_replays_a_dead_letter(
    serve: Serve, repo_config: Config, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serve(repo_config) as service:
        base = f"http://127.0.0.1:{service.http_port}"
        await post(http, events_url(service, "clinic/registration"), NAMELESS)
        for value in range(5):
            await post(http, events_url(service, "doorbell/d1/temperature"), {"value": 20 + value})
        await wait_for(lambda: processed(service, "clinic.registration", "dead") == 1, timeout=10)

        async with Chromium.launch(http, tmp_path / "chromium") as page:
            await page.navigate(f"{base}/ui")

            async def drawn() -> bool:
                return bool(await page.evaluate("document.body?.dataset.state") == "ready")

            await wait_for(drawn, timeout=10, interval=0.05)
            for region in ("classes", "lanes", "instances", "mqtt", "dead-letters"):
                assert await page.evaluate(f"!!document.getElementById('{region}')"), region

            async def one_dead_letter() -> bool:
                return bool(await page.evaluate(row("clinic.registration", "dead")) == "1")

            await wait_for(one_dead_letter, timeout=10, interval=0.05)
            before = await page.evaluate(row("doorbell.reading", "rate"))
            assert re.fullmatch(r"[\d.,]+", before), before

            # The figures move live: a burst of readings shows in the rate within a few polls.
            for value in range(200):
                await post(http, events_url(service, "doorbell/d1/temperature"), {"value": value})

            async def moved() -> str:
                now = await page.evaluate(row("doorbell.reading", "rate"))
                return now if now != before and float(now.replace(",", "")) > 0 else ""

            after = await wait_for(moved, timeout=10, interval=0.05)

            # The dead letter, listed from its count, its text escaped.
            first = await service_letters(http, base)
            assert len(first) == 1
            await nothing_selected_replays_nothing(http, base, first)
            await page.evaluate(
                'document.querySelector(\'#classes tr[data-class="clinic.registration"] '
                "button.dlq').click()"
            )

            async def listed() -> list[str]:
                found: list[str] = await page.evaluate(
                    "[...document.querySelectorAll('#dead-letters tr[data-entry]')]"
                    ".map((tr) => tr.dataset.entry + ' ' + tr.textContent)"
                )
                return found

            letters = await wait_for(listed, timeout=5, interval=0.05)
            assert len(letters) == 1
            assert letters[0].startswith(first[0]["entry_id"])
            assert "registration is missing name" in letters[0]
            assert "<img src=x id=pwned>" in letters[0]  # shown as text ...
            assert await page.evaluate("document.getElementById('pwned')") is None  # ... not run

            # Replayed: still nameless, so it fails again, a new dead letter in the same class.
            await page.evaluate("document.getElementById('dlq-replay-all').click()")

            async def replied() -> str:
                said: str = await page.evaluate("document.getElementById('dlq-reply').textContent")
                return said if said.startswith("Replayed") else ""

            reply = await wait_for(replied, timeout=5, interval=0.05)
            assert re.match(r"Replayed 1, skipped 0\b", reply), reply
            await wait_for(
                lambda: processed(service, "clinic.registration", "dead") == 2, timeout=10
            )
            again = await service_letters(http, base)
            assert len(again) == 1
            assert again[0]["entry_id"] != first[0]["entry_id"]

            async def relisted() -> bool:
                shown = await listed()
                return len(shown) == 1 and shown[0].startswith(again[0]["entry_id"])

            await wait_for(relisted, timeout=10, interval=0.05)  # the list follows by itself
            assert await page.evaluate("new URL(location.href).searchParams.get('dlq')") == (
                "clinic.registration"
            )

            png = await page.screenshot()

    assert float(after.replace(",", "")) > 0
    screenshot = tmp_path / "console.png"
    screenshot.write_bytes(png)
    assert png.startswith(b"\x89PNG")
    assert len(png) > 20_000  # a drawn console, not a blank page
    keep(screenshot)


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with http.post(url, json=body) as response:
        assert response.status == 202, await response.text()


async def nothing_selected_replays_nothing(
    http: aiohttp.ClientSession, base: str, letters: list[dict[str, Any]]
) -> None:
    """A replay of an empty selection moves nothing (it once meant every dead letter)."""
    replay = f"{base}/ui/dead-letters/clinic.registration/replay"
    async with http.post(replay, json={"ids": []}) as response:
        answer = await response.json()
    assert answer == {"class": "clinic.registration", "replayed": 0, "skipped": []}
    assert await service_letters(http, base) == letters


async def service_letters(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    """The dead letters of clinic.registration, as the service answers them."""
    async with http.get(f"{base}/ui/dead-letters/clinic.registration") as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
    letters: list[dict[str, Any]] = answer["letters"]
    return letters


def keep(screenshot: Path) -> None:
    """Copy the screenshot into `$SWITCHYARD_ARTIFACTS` (a directory), when it is set."""
    artifacts = os.environ.get("SWITCHYARD_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / screenshot.name)
