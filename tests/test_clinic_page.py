"""The clinic lead's board page (`GET /clinic`) in a real headless browser: the figures the
service answers on `/clinic/board` drawn as the lead sees them on the wall screen."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import events_url
from servers import wait_for

from router.config import load_config

if TYPE_CHECKING:
    import aiohttp
    from helpers import Serve

    from router.config import Config

REPO = Path(__file__).resolve().parent.parent
HEALTHY = ("P1", "P2", "P3")
FEVERISH = "P4"  # 39.2 °C: screened out at the door
NAMELESS = "P5"  # no name: registration fails, the patient needs attention

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs chromium (a real headless browser)"
)


@pytest.fixture
def clinic_config(repo_config: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Config:
    """The repository's config (`repo_config`'s environment) with a minute of observation, so
    that the vaccinated are still under observation when the browser looks, and the clinic's
    lake in the test's directory."""
    monkeypatch.setenv("SWITCHYARD_CLINIC_OBSERVATION_S", "60")
    monkeypatch.setenv("SWITCHYARD_CLINIC_LAKE", str(tmp_path / "clinic"))
    return load_config(REPO / "config.yaml")


def patient(patient_id: str, name: str, temperature_c: float = 36.8) -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "name": name,
        "birth_date": "1980-01-01",
        "temperature_c": temperature_c,
    }


async def test_the_clinic_board_draws_the_day_in_a_real_browser(
    serve: Serve, clinic_config: Config, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serve(clinic_config) as service:
        base = f"http://127.0.0.1:{service.http_port}"
        arrivals = [
            patient("P1", "Ann"),
            patient("P2", "Bob"),
            patient("P3", "Cleo"),
            patient(FEVERISH, "Dev", temperature_c=39.2),
            patient(NAMELESS, ""),
        ]
        for arrival in arrivals:
            await post(http, events_url(service, "clinic/arrival"), arrival)

        async def board() -> dict[str, Any]:
            async with http.get(f"{base}/clinic/board") as response:
                assert response.status == 200, await response.text()
                found: dict[str, Any] = await response.json()
                return found

        async def summed_up() -> bool:
            summary = rows(await board(), "summary")[0]
            return (summary["observing"], summary["screened_out"], summary["needs_attention"]) == (
                len(HEALTHY),
                1,
                1,
            )

        await wait_for(summed_up, timeout=15, interval=0.1)

        reaction = {"patient_id": "P1", "severity": "mild", "note": "rash"}
        await post(http, events_url(service, "clinic/reaction"), reaction)

        async def reacted() -> bool:
            observed = {row["patient_id"]: row for row in rows(await board(), "observation")}
            return observed.get("P1", {}).get("reactions") == 1

        await wait_for(reacted, timeout=10, interval=0.1)

        screenshot = tmp_path / "clinic-board.png"
        page = f"{base}/clinic?patient={NAMELESS}"  # the look-up box filled in, too
        dom, _ = await asyncio.gather(
            browse("--dump-dom", page), browse(f"--screenshot={screenshot}", page)
        )

    assert 'data-state="ready"' in dom  # the board came back and was drawn
    for region in ("summary", "stations", "observation", "attention"):
        assert f'id="{region}"' in dom
    observation = between(dom, 'id="observation"', 'id="attention"')
    for patient_id in HEALTHY:
        assert f'data-patient="{patient_id}"' in observation
    assert re.search(r'<tr class="reacted" [^>]*data-patient="P1"', observation)  # the rash
    attention = between(dom, 'id="attention"', 'id="patient"')
    assert f'data-patient="{NAMELESS}"' in attention
    assert "registration is missing name" in attention
    assert 'class="desk"' in dom  # the desks that served, under their station
    journey = dom[dom.index('id="patient"') :]
    assert f"Patient {NAMELESS}" in journey
    assert ">arrived<" in journey
    assert screenshot.stat().st_size > 20_000  # a drawn board, not a blank page
    keep(screenshot)


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with http.post(url, json=body) as response:
        assert response.status == 202, await response.text()


def rows(board: dict[str, Any], part: str) -> list[dict[str, Any]]:
    """One part of `/clinic/board` as rows keyed by column."""
    answer = board[part]
    return [dict(zip(answer["columns"], row, strict=True)) for row in answer["rows"]]


def between(text: str, start: str, end: str) -> str:
    """The part of `text` from `start` up to `end`."""
    assert start in text, start
    assert end in text, end
    return text[text.index(start) : text.index(end)]


def keep(screenshot: Path) -> None:
    """Copy the screenshot into `$SWITCHYARD_ARTIFACTS` (a directory), when it is set."""
    artifacts = os.environ.get("SWITCHYARD_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / screenshot.name)


async def browse(action: str, url: str) -> str:
    """Headless chromium on `url`: its DOM after the scripts ran, or a screenshot (as
    `test_music_lake.browse`)."""
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1300,1400",
        "--virtual-time-budget=5000", action, url,
    ]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
