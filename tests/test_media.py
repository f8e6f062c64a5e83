"""The media store: doorbell clips PUT over HTTP into a local folder or a real S3-compatible
store (moto's server), announced by an event only once whole, streamed back with Range
requests, listed, refused whole when too large, mistyped or corrupted, kept pending and
announced later when Redis is away or a SIGKILL lands between the clip and its event, swept
after retention, and uploaded with the service's memory flat.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import stream_entries
from redis.asyncio import Redis as AsyncRedis
from servers import RedisServer, ServiceProcess, free_port, wait_for

from router.config import parse_config
from router.ingress.media import Unsatisfiable, byte_range
from router.storage.clips import ANNOUNCED, PENDING, manifest_key
from router.storage.objects import ObjectStore
from router.streams import keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp
    from helpers import Serve
    from redis.asyncio import Redis

    from router.service.service import Service

pytestmark = pytest.mark.integration
VIDEO = "doorbell.video_upload"
AUDIO = "doorbell.audio_upload"
INDEX = "test:clips"  # where ClipIndex keeps each clip's reference
MiB = 1 << 20


def media_yaml(
    redis_url: str,
    store: str,
    *,
    port: int = 0,
    max_bytes: int = 64 * MiB,
    retention_s: float = 86_400,
    recover_after_s: float = 1.5,  # longer than any step of an upload here
) -> str:
    return f"""
service: {{drain_timeout_s: 5, log_format: json}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: {port}}}
lanes: [{{name: low}}]
routes:
  - {{topic: doorbell/+/video_upload, class: {VIDEO}, key: topic.1}}
  - {{topic: doorbell/+/audio_upload, class: {AUDIO}, key: topic.1}}
classes:
  {VIDEO}: {{lane: low, actor: "actors.doorbell:ClipIndex", options: {{stream: "{INDEX}"}}}}
  {AUDIO}: {{lane: low, actor: "actors.doorbell:ClipIndex", options: {{stream: "{INDEX}"}}}}
media:
  store: "{store}"
  max_bytes: {max_bytes}
  retention_s: {retention_s}
  sweep_every_s: 0.1
  recover_after_s: {recover_after_s}
  uploads:
    - {{path: doorbell/+/+, topic: "doorbell/{{1}}/{{kind}}_upload"}}
"""


def base(service: Service | int) -> str:
    port = service if isinstance(service, int) else service.http_port
    return f"http://127.0.0.1:{port}/media"


async def put(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    content_type: str = "video/mp4",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    if isinstance(body, bytes):
        body = io.BytesIO(body)  # sized, and sent without holding the loop
    async with http.put(
        url, data=body, headers={"Content-Type": content_type, **(headers or {})}
    ) as response:
        return response.status, await response.json()


async def events(redis: Redis, cls: str = VIDEO) -> int:
    return int(await redis.xlen(keys.stream(cls)))


def every_object(store: str) -> list[str]:
    """Every object in the store, hidden ones (manifests, scratch files) included."""
    return [o.key for o in ObjectStore(store).list(hidden=True)]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The media store: a folder, or a bucket in moto's S3 server."""
    if request.param == "s3":
        request.getfixturevalue("s3")
        return "s3://lake/media"
    return str(tmp_path / "media")


# --- Range headers ---


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=100-199", (100, 100)),
        ("bytes=900-", (900, 100)),
        ("bytes=-10", (990, 10)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 10)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole clip, as RFC 9110 allows
        ("items=0-1", None),
    ],
)
def test_a_single_byte_range_is_read_in_each_form(
    header: str | None, expected: tuple[int, int] | None
) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0", "bytes=5-4"])
def test_a_range_outside_the_clip_is_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(header, 1000)


def test_a_media_upload_topic_names_only_levels_of_its_path() -> None:
    text = media_yaml("redis://127.0.0.1:1/0", "m").replace("{1}", "{3}")
    with pytest.raises(Exception, match="placeholder"):
        parse_config(text)


# --- upload, read back, list ---


async def test_a_clip_is_stored_announced_streamed_back_by_range_and_listed(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession, store: str
) -> None:
    clip = os.urandom(3 * MiB + 123)
    digest = hashlib.sha256(clip).hexdigest()
    async with serve(parse_config(media_yaml(redis_url, store))) as service:
        url = f"{base(service)}/doorbell/front/c1.mp4"
        status, reply = await put(http, url, clip, headers={"X-Checksum-SHA256": digest})
        assert status == 201, reply
        assert reply["class"] == VIDEO
        assert reply["url"] == "/media/doorbell/front/c1.mp4"
        assert (reply["clip_id"], reply["device_id"], reply["kind"]) == ("c1.mp4", "front", "video")
        assert (reply["bytes"], reply["sha256"], reply["content_type"]) == (
            len(clip), digest, "video/mp4",
        )  # fmt: skip
        async with http.get(url) as response:
            assert response.status == 200
            assert response.headers["Accept-Ranges"] == "bytes"
            assert response.headers["Content-Type"] == "video/mp4"
            assert int(response.headers["Content-Length"]) == len(clip)
            assert await response.read() == clip
        size = len(clip)
        for header, start, end in [
            ("bytes=0-99", 0, 99),
            ("bytes=1048576-2097151", MiB, 2 * MiB - 1),
            ("bytes=-500", size - 500, size - 1),
            (f"bytes={size - 10}-", size - 10, size - 1),
        ]:
            async with http.get(url, headers={"Range": header}) as response:
                assert response.status == 206, header
                assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
                assert await response.read() == clip[start : end + 1]
        async with http.get(url, headers={"Range": f"bytes={size}-"}) as response:
            assert response.status == 416
            assert response.headers["Content-Range"] == f"bytes */{size}"
        async with http.get(f"{base(service)}/doorbell/front/nope") as response:
            assert response.status == 404
        async with http.get(f"{base(service)}/doorbell/front") as response:
            listed = (await response.json())["clips"]
        assert [(c["url"], c["bytes"], c["content_type"]) for c in listed] == [
            ("/media/doorbell/front/c1.mp4", size, "video/mp4")
        ]
        [indexed] = await wait_for(lambda: stream_entries(redis, INDEX))
        assert indexed["sha256"] == digest.encode()
        assert indexed["url"] == b"/media/doorbell/front/c1.mp4"
        assert indexed["device_id"] == b"front"
        registry = service.metrics.registry
        stored = registry.get_sample_value("switchyard_media_uploads_total", {"outcome": "stored"})
        assert stored == 1
        assert registry.get_sample_value("switchyard_media_uploaded_bytes_total") == size


async def test_the_event_arrives_only_once_the_clip_is_whole_in_the_store(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = str(tmp_path / "media")
    clip = os.urandom(8 * MiB)
    async with serve(parse_config(media_yaml(redis_url, store))) as service:
        seen: list[int | None] = []

        async def watch() -> None:
            reply: Any = await redis.xread({keys.stream(AUDIO): "0-0"}, block=20_000)
            assert reply, "no event"
            info = ObjectStore(store).info("doorbell/back/a1")  # the moment the event exists
            seen.append(info.size if info is not None else None)

        watcher = asyncio.create_task(watch())
        status, _ = await put(http, f"{base(service)}/doorbell/back/a1", clip, "audio/ogg")
        await watcher
        assert status == 201
        assert seen == [len(clip)]


# --- refused whole: nothing kept, no event ---


async def test_a_checksum_mismatch_is_a_400_with_nothing_stored_and_no_event(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = str(tmp_path / "media")
    clip = os.urandom(MiB)
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    right_md5 = base64.b64encode(hashlib.md5(clip).digest()).decode()
    async with serve(parse_config(media_yaml(redis_url, store))) as service:
        url = f"{base(service)}/doorbell/front/c1"
        for headers in (
            {"Content-MD5": wrong_md5},
            {"X-Checksum-SHA256": hashlib.sha256(b"other").hexdigest()},
            {"Content-MD5": "not base64!"},
        ):
            status, reply = await put(http, url, clip, headers=headers)
            assert status == 400, reply
        assert every_object(store) == []
        assert await events(redis) == 0
        status, _ = await put(http, url, clip, headers={"Content-MD5": right_md5})
        assert status == 201


async def test_an_oversized_clip_is_a_413_with_nothing_stored_and_the_service_stays_up(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = str(tmp_path / "media")
    config = parse_config(media_yaml(redis_url, store, max_bytes=MiB))

    async def unsized() -> AsyncIterator[bytes]:  # chunked: counted as it arrives
        for _ in range(4):
            yield b"x" * (MiB // 2)

    async with serve(config) as service:
        url = f"{base(service)}/doorbell/front/big"
        status, reply = await put(http, url, b"x" * (2 * MiB))  # refused by Content-Length
        assert status == 413, reply
        status, reply = await put(http, url, unsized())
        assert status == 413, reply
        assert every_object(store) == []
        assert await events(redis) == 0
        async with http.get(f"http://127.0.0.1:{service.http_port}/healthz") as response:
            assert response.status == 200
        status, _ = await put(http, url, b"x" * MiB)  # exactly the limit
        assert status == 201
        too_large = {"outcome": "too_large"}
        samples = service.metrics.registry.get_sample_value
        assert samples("switchyard_media_uploads_total", too_large) == 2


async def test_only_video_and_audio_are_taken_and_only_where_an_upload_path_allows(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = str(tmp_path / "media")
    async with serve(parse_config(media_yaml(redis_url, store))) as service:
        url = f"{base(service)}/doorbell/front/c1"
        assert (await put(http, url, b"hello", "text/plain"))[0] == 415
        assert (await put(http, url, b"hello", "application/octet-stream"))[0] == 415
        assert (await put(http, f"{base(service)}/elsewhere/c1", b"hello"))[0] == 404
        assert (await put(http, f"{base(service)}/doorbell/.front/c1", b"hello"))[0] == 400
        async with http.get(f"{base(service)}/doorbell/front/.c1.json") as response:
            assert response.status == 404  # manifests are never served
        assert every_object(store) == []
        assert await events(redis) == 0


async def test_the_same_clip_again_is_announced_once_and_other_bytes_are_a_conflict(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = str(tmp_path / "media")
    async with serve(parse_config(media_yaml(redis_url, store))) as service:
        url = f"{base(service)}/doorbell/front/c1"
        first = await put(http, url, b"clip one")
        again = await put(http, url, b"clip one")
        other = await put(http, url, b"clip two")
        assert (first[0], again[0], other[0]) == (201, 200, 409)
        assert again[1]["event_id"] == first[1]["event_id"]
        assert again[1]["duplicate"] is True
        assert await events(redis) == 1


# --- Redis away, crashes: a clip is kept and announced once, never an event without one ---


async def clip_served(http: aiohttp.ClientSession, url: str) -> bytes | None:
    """The clip's bytes once it is served, else None."""
    async with http.get(url) as response:
        return await response.read() if response.status == 200 else None


async def test_a_clip_whose_event_cannot_be_written_is_kept_pending_and_announced_later(
    serve: Serve, http: aiohttp.ClientSession, private_redis: RedisServer, tmp_path: Path
) -> None:
    store = str(tmp_path / "media")
    config = parse_config(media_yaml(private_redis.url, store))
    async with serve(config) as service:
        url = f"{base(service)}/doorbell/front/c1"
        await private_redis.stop()
        try:
            status, reply = await put(http, url, b"a clip while redis is away")
            assert status == 503, reply
            async with http.get(url) as response:
                assert response.status == 404  # not announced: not served
            assert manifest_key("doorbell/front/c1", PENDING) in every_object(store)
        finally:
            await private_redis.start()
        redis = AsyncRedis.from_url(private_redis.url)
        try:
            [indexed] = await wait_for(lambda: stream_entries(redis, INDEX), timeout=15)
            assert indexed["url"] == b"/media/doorbell/front/c1"
            # Indexed first, then the manifest marked announced: served once both are done.
            served = await wait_for(lambda: clip_served(http, url), timeout=15)
            assert served == b"a clip while redis is away"
            assert await events(redis) == 1
        finally:
            await redis.aclose()

        def recovered() -> float | None:  # counted once the sweep's announce has returned
            return service.metrics.registry.get_sample_value(
                "switchyard_media_clips_recovered_total"
            )

        await wait_for(lambda: recovered() == 1, timeout=15)


async def start_process(tmp_path: Path, yaml: str) -> ServiceProcess:
    path = tmp_path / "switchyard.yaml"
    path.write_text(yaml)
    service = ServiceProcess(path, cwd=Path(__file__).parent)
    await service.start()
    await wait_for(lambda: service.logged("http ingress listening"), timeout=20)
    return service


@pytest.mark.timeout(90)
async def test_a_sigkill_mid_upload_leaves_no_visible_clip_and_no_event(
    redis_url: str, redis: Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store, port = str(tmp_path / "media"), free_port()
    service = await start_process(tmp_path, media_yaml(redis_url, store, port=port))
    stall = asyncio.Event()

    async def half_a_clip() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield os.urandom(MiB)
        await stall.wait()  # the rest never comes: the service dies first

    def scratch_size() -> int:
        found = ObjectStore(store).list(hidden=True)
        return sum(o.size for o in found if o.name.endswith(ObjectStore.TEMPORARY))

    upload = asyncio.create_task(put(http, f"{base(port)}/doorbell/front/c1", half_a_clip()))
    try:
        await wait_for(lambda: scratch_size() >= 2 * MiB, timeout=20)
        await service.kill()
        with pytest.raises(Exception):  # noqa: B017, PT011 - the connection dies, however it says so
            await upload
        assert ObjectStore(store).list() == []  # nothing visible
        assert await events(redis) == 0
        await service.start()
        await wait_for(lambda: service.logged("http ingress listening"), timeout=20)
        async with http.get(f"{base(port)}/doorbell/front") as response:
            assert (await response.json())["clips"] == []
        async with http.get(f"{base(port)}/doorbell/front/c1") as response:
            assert response.status == 404
        await wait_for(lambda: every_object(store) == [], timeout=10)  # the scratch swept
        assert await events(redis) == 0
    finally:
        stall.set()
        upload.cancel()
        await service.close()


@pytest.mark.timeout(90)
async def test_a_sigkill_between_the_clip_and_its_event_is_recovered_by_writing_the_event_once(
    private_redis: RedisServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store, port = str(tmp_path / "media"), free_port()
    service = await start_process(tmp_path, media_yaml(private_redis.url, store, port=port))
    path = "doorbell/front/c1"
    clip = os.urandom(MiB)
    redis_pid = private_redis.pid
    assert redis_pid is not None
    upload = None
    try:
        os.kill(redis_pid, signal.SIGSTOP)  # the event's write hangs once the clip is stored
        upload = asyncio.create_task(put(http, f"{base(port)}/{path}", clip))
        stored = ObjectStore(store)
        await wait_for(lambda: stored.info(path) is not None, timeout=10)
        await service.kill()
        os.kill(redis_pid, signal.SIGCONT)
        keys_now = every_object(store)
        assert manifest_key(path, PENDING) in keys_now
        assert manifest_key(path, ANNOUNCED) not in keys_now
        await service.start()
        await wait_for(lambda: service.logged("clip announced after a crash"), timeout=20)
        redis = AsyncRedis.from_url(private_redis.url)
        try:
            [indexed] = await wait_for(lambda: stream_entries(redis, INDEX), timeout=15)
            assert indexed["sha256"] == hashlib.sha256(clip).hexdigest().encode()
            assert await events(redis) == 1  # written once, even had the first write landed
        finally:
            await redis.aclose()
        async with http.get(f"{base(port)}/{path}") as response:
            assert await response.read() == clip
        assert manifest_key(path, PENDING) not in every_object(store)
    finally:
        os.kill(redis_pid, signal.SIGCONT)
        if upload is not None:
            upload.cancel()
        await service.close()


# --- retention ---


async def test_retention_deletes_old_clips_bytes_and_listing_and_keeps_the_rest(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = str(tmp_path / "media")
    config = parse_config(media_yaml(redis_url, store, retention_s=3600))
    async with serve(config) as service:
        for name in ("old", "new"):
            status, _ = await put(http, f"{base(service)}/doorbell/front/{name}", name.encode())
            assert status == 201
        day_ago = ObjectStore(store).info("doorbell/front/old")
        assert day_ago is not None
        os.utime(Path(store) / "doorbell/front/old", (day_ago.mtime - 86_400,) * 2)
        kept = [manifest_key("doorbell/front/new", ANNOUNCED), "doorbell/front/new"]
        # The sweep deletes a clip's bytes, then its manifest: wait for both to be gone.
        await wait_for(lambda: every_object(store) == kept)
        async with http.get(f"{base(service)}/doorbell/front") as response:
            assert [c["clip_id"] for c in (await response.json())["clips"]] == ["new"]
        deleted = service.metrics.registry.get_sample_value(
            "switchyard_media_clips_deleted_total", {"reason": "retention"}
        )
        assert deleted == 1


# --- memory ---


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.timeout(120)
async def test_a_200_mb_upload_is_streamed_through_with_the_services_memory_flat(
    redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store, port = str(tmp_path / "media"), free_port()
    yaml = media_yaml(redis_url, store, port=port, max_bytes=1 << 30)
    service = await start_process(tmp_path, yaml)
    block = os.urandom(MiB)
    total = 200 * MiB
    try:
        assert service.pid is not None
        await put(http, f"{base(port)}/doorbell/front/warm-up", block)  # code paths loaded
        before = rss_kib(service.pid)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(total // MiB):
                yield block

        status, reply = await put(http, f"{base(port)}/doorbell/front/big", body())
        assert status == 201, reply
        assert reply["bytes"] == total
        peak = rss_kib(service.pid, "VmHWM")
        grew_mib = (peak - before) / 1024
        assert grew_mib < 40, f"RSS grew {grew_mib:.0f} MiB for a {total // MiB} MiB clip"
        async with http.get(f"{base(port)}/doorbell/front/big") as response:
            received = 0
            async for chunk in response.content.iter_chunked(MiB):
                received += len(chunk)
        assert received == total
        grew_mib = (rss_kib(service.pid, "VmHWM") - before) / 1024
        assert grew_mib < 40, f"RSS grew {grew_mib:.0f} MiB serving a {total // MiB} MiB clip"
    finally:
        await service.close()
