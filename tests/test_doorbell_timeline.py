"""The visitor timeline: the doorbell actors put each ring, detection and clip on it, the
timeline archiver keeps it in a lake (on disk or S3), and one device's timeline is answered
newest first, over the analytics provider, HTTP and the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from conftest import REPO_WEBHOOK_SECRET
from helpers import post_events
from servers import free_port, wait_for

from actors.api import PermanentFailure, Query
from actors.doorbell import (
    Detection,
    OwnerAlert,
    ReadingSummary,
    TimelineArchiver,
    VideoArchive,
)
from actors.doorbell.analytics import DoorbellAnalytics
from actors.doorbell.clips import ClipIndex
from actors.doorbell.timeline import TIMELINE
from router.cli import main
from router.notify.device import Device
from router.notify.receiver import WebhookReceiver
from router.testing import FakeContext, event

if TYPE_CHECKING:
    import aiohttp
    from helpers import Serve

    from router.config import Config
    from router.streams.envelope import Envelope

ROOT = Path(__file__).parent.parent
T0 = 1_749_999_600.0  # 2025-06-15T15:00:00Z
CLIP = {
    "clip_id": "c1.mp3", "kind": "audio", "content_type": "audio/mpeg", "sha256": "ab" * 32,
    "url": "/media/doorbell/d1/c1.mp3", "bytes": 1234,
}  # fmt: skip


def at(envelope: Envelope, seconds: float) -> Envelope:
    return envelope._replace(ingest_ts=seconds)


def entry(device: str, kind: str, when: float, **more: Any) -> Envelope:
    payload = {"device_id": device, "kind": kind, "at": when, "details": {},
               "clip_url": None, "event_id": f"{device}-{kind}-{when}"} | more  # fmt: skip
    return event(payload, cls=TIMELINE, key=device)


async def archive(lake: str, entries: list[Envelope], **ctx: Any) -> FakeContext:
    context = FakeContext(entries[0], **ctx)
    await TimelineArchiver(lake=lake, compact_every_s=0).handle_batch(entries, context)
    return context


def timeline(lake: str, device: str, **query: Any) -> list[dict[str, Any]]:
    query.setdefault("since", datetime(2025, 6, 1, tzinfo=UTC))  # by default: the last 7 days
    found = DoorbellAnalytics(lake=lake).answer("timeline", Query(user=device, **query))
    return [dict(zip(found.columns, row, strict=True)) for row in found.to_json()["rows"]]


# --- the actors put their events on the timeline ---


async def test_a_ring_a_confident_motion_and_a_clip_each_put_one_entry_on_the_timeline() -> None:
    ring = at(event({"priority": "high"}, key="d1", topic="doorbell/d1/button_press"), T0)
    motion = at(event({"confidence": 0.95}, key="d1", topic="doorbell/d1/motion_detected"), T0 + 1)
    clip = at(event(CLIP, key="d1", topic="doorbell/d1/audio_upload"), T0 + 2)
    video = event({"clip_id": "v1", "url": "/media/doorbell/d1/v1.mp4"}, key="d1")
    ctx = FakeContext(ring, devices={"d1": Device("d1", "ann")})

    await OwnerAlert(timeline=TIMELINE).handle(ring, ctx)
    await Detection(timeline=TIMELINE).handle(motion, ctx)
    await ClipIndex(timeline=TIMELINE).handle(clip, ctx)
    await VideoArchive(timeline=TIMELINE).handle(video, ctx)

    entries = [(e.target, e.key, e.payload) for e in ctx.emitted]
    assert entries == [
        (TIMELINE, "d1", {"device_id": "d1", "kind": "ring", "at": T0,
                          "details": {"priority": "high"}, "clip_url": None,
                          "event_id": ring.id}),
        (TIMELINE, "d1", {"device_id": "d1", "kind": "motion", "at": T0 + 1,
                          "details": {"confidence": 0.95, "threshold": 0.9, "alerted": True},
                          "clip_url": None, "event_id": motion.id}),
        (TIMELINE, "d1", {"device_id": "d1", "kind": "audio", "at": T0 + 2,
                          "details": {"clip_id": "c1.mp3", "content_type": "audio/mpeg",
                                      "bytes": 1234},
                          "clip_url": "/media/doorbell/d1/c1.mp3", "event_id": clip.id}),
        (TIMELINE, "d1", {"device_id": "d1", "kind": "video", "at": 0.0,
                          "details": {"clip_id": "v1", "duration_s": 0.0},
                          "clip_url": "/media/doorbell/d1/v1.mp4", "event_id": video.id}),
    ]  # fmt: skip
    assert [alert.kind for alert in ctx.notified] == ["ring", "motion"]

    without = FakeContext(ring, devices={"d1": Device("d1", "ann")})
    await OwnerAlert().handle(ring, without)  # no timeline option: a config without the class
    assert without.emitted == []


# --- the archiver and the question ---


async def test_the_timeline_is_one_devices_entries_newest_first_whatever_their_kind(
    tmp_path: Path,
) -> None:
    lake = str(tmp_path / "doorbell")
    await archive(lake, [entry("d1", "ring", T0), entry("d2", "ring", T0 + 5),
                         entry("d1", "offline", T0 + 3600)])  # fmt: skip
    await archive(lake, [entry("d1", "audio", T0 + 10, clip_url="/media/doorbell/d1/c1.mp3",
                               details={"bytes": 3})])  # fmt: skip

    rows = timeline(lake, "d1")
    assert [(r["kind"], r["clip_url"]) for r in rows] == [
        ("offline", None), ("audio", "/media/doorbell/d1/c1.mp3"), ("ring", None),
    ]  # fmt: skip
    assert rows[1]["details"] == {"bytes": 3}
    assert rows[0]["at"] == "2025-06-15T16:00:00+00:00"
    assert [r["kind"] for r in timeline(lake, "d1", limit=2)] == ["offline", "audio"]
    assert timeline(lake, "nobody") == []
    with pytest.raises(ValueError, match="one device"):
        timeline(lake, "")


async def test_a_malformed_entry_fails_alone_and_a_batch_run_again_writes_nothing_twice(
    tmp_path: Path,
) -> None:
    lake = str(tmp_path / "doorbell")
    good = [entry("d1", "ring", T0), entry("d1", "motion", T0 + 1)]
    bad = [
        entry("d1", "ring", float("inf")), entry("d1", "ring", True), entry("", "ring", T0),
        entry("d1", "ring", T0, details=[1]), entry("d1", "ring", T0, clip_url=5),
        entry("d1", "ring", 10**400), entry("d1", "ring", T0, details={"x": "y" * 5000}),
    ]  # fmt: skip
    ctx = await archive(lake, good + bad)
    assert set(ctx.failed) == {e.id for e in bad}
    assert all(isinstance(error, PermanentFailure) for error in ctx.failed.values())

    again = {e.id for e in good}
    await archive(lake, good, taken_over=again)  # the same batch, after a crash
    assert [r["kind"] for r in timeline(lake, "d1")] == ["motion", "ring"]


# --- the service: HTTP and the CLI ---


async def test_the_service_answers_a_devices_timeline_over_http_and_the_cli(
    serve: Serve,
    repo_config: Config,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    owner = WebhookReceiver(REPO_WEBHOOK_SECRET)
    receiver = web.AppRunner(owner.app())
    await receiver.setup()
    port = free_port()
    await web.TCPSite(receiver, "127.0.0.1", port).start()
    webhook = f"http://127.0.0.1:{port}/alerts"
    try:
        async with serve(repo_config) as service:
            assert service.notifier is not None
            for device in ("d1", "d2"):
                await service.notifier.registry("doorbell").add(
                    Device(device, "ann", webhook=webhook)
                )
            sent = [
                ("doorbell/d1/button_press", {"priority": "high"}),
                ("doorbell/d2/button_press", {}),
                ("doorbell/d1/motion_detected", {"confidence": 0.97}),
                ("doorbell/d1/audio_upload", CLIP),
                ("doorbell/d1/temperature", {"value": 21.5}),
                ("doorbell/d1/temperature", {"value": 22.5}),
            ]
            for topic, payload in sent:  # one after the other: each ingested later
                status, _ = await post_events(http, service, topic, payload)
                assert status == 202
            url = f"http://127.0.0.1:{service.http_port}/doorbell/d1/timeline?since=1h"

            async def answered() -> list[list[Any]]:
                async with http.get(url) as response:
                    assert response.status == 200
                    rows: list[list[Any]] = (await response.json())["rows"]
                    return rows if len(rows) == 3 else []

            rows = await wait_for(answered, timeout=15)
            assert [(row[1], row[3]) for row in rows] == [
                ("audio", "/media/doorbell/d1/c1.mp3"), ("motion", None), ("ring", None),
            ]  # fmt: skip
            async with http.get(url.replace("since=1h", "since=soon")) as response:
                assert response.status == 400

            argv = ["doorbell", "timeline", "d1", "--since", "1h", "--format", "json",
                    "--config", str(ROOT / "config.yaml")]  # fmt: skip
            capsys.readouterr()
            assert await asyncio.to_thread(main, argv) == 0
            printed = json.loads(capsys.readouterr().out)
            assert [row[1] for row in printed["rows"]] == ["audio", "motion", "ring"]

            readings = url.replace("timeline", "readings")

            async def counted() -> list[list[Any]]:
                async with http.get(readings) as response:
                    minutes: list[list[Any]] = (await response.json())["rows"]
                    return minutes if sum(m[2] for m in minutes) == 2 else []

            minutes = await wait_for(counted, timeout=15)  # one, unless a minute turned
            assert {m[1] for m in minutes} == {"temperature"}
            assert (min(m[3] for m in minutes), max(m[4] for m in minutes)) == (21.5, 22.5)
            argv[1:2] = ["readings"]
            assert await asyncio.to_thread(main, [*argv, "--kind", "light"]) == 0
            assert json.loads(capsys.readouterr().out)["rows"] == []
            by_option = ["doorbell", "readings", "--device", "d1", *argv[3:]]  # as the brief has it
            assert await asyncio.to_thread(main, by_option) == 0
            assert sum(row[2] for row in json.loads(capsys.readouterr().out)["rows"]) == 2
    finally:
        await receiver.cleanup()


async def test_the_doorbell_lakes_work_on_s3(s3: Any) -> None:
    lake = "s3://lake/doorbell"
    await archive(lake, [entry("d1", "ring", T0), entry("d1", "offline", time.time())])
    assert [r["kind"] for r in timeline(lake, "d1")] == ["offline", "ring"]
    assert [r["kind"] for r in timeline(lake, "d1", since=None)] == ["offline"]  # 7 days

    readings = [
        at(event({"value": v}, key="d1", topic="doorbell/d1/light"), T0 + v) for v in (1, 3)
    ]
    await ReadingSummary(lake=lake, compact_every_s=0).handle_batch(readings, FakeContext())
    asked = Query(user="d1", since=datetime(2025, 6, 1, tzinfo=UTC))
    [minute] = DoorbellAnalytics(lake=lake).answer("readings", asked).rows
    assert minute[1:6] == ["light", 2, 1.0, 3.0, 2.0]
