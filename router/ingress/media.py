"""Media over HTTP: `PUT /media/<path>` stores a clip and announces it with an event,
`GET /media/<path>` streams it back (Range requests too), `GET /media/<folder>` lists clips.

A body is streamed into the store a chunk at a time (never held whole), counted against
`max_bytes` as it arrives (and by Content-Length up front), hashed on the way and checked
against a `Content-MD5` or `X-Checksum-SHA256` the client sent: 413 or 400, and nothing is
kept. Only video/* and audio/* are taken (415).

The event comes only once the clip is published, and a clip is served or listed only once its
event is written. The other way round is never possible: no event names a clip that is not
whole in the store. A clip whose event could not be written (Redis away, a timeout that cannot
tell whether the write landed, the class shedding load, a crash) is kept, pending, and
announced later: by the same PUT retried (503 says so), or else by the next sweep
(`router.ingress.media_upkeep`) once it has waited `recover_after_s`. Either writes the event
under an id derived from the path and the bytes, so one that did reach Redis is de-duplicated
rather than doubled (`router.storage.clips` lays the steps out). A retried PUT of a stored
clip's bytes is answered 200 and announced once; other bytes at its path are a 409.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from router.config.models import MEDIA_LEVEL
from router.errors import ClassOverloaded, RefusedEvents, WriteRefused
from router.storage.clips import Clip, ClipStore, event_id_of
from router.storage.objects import ObjectStore
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from router.clock import Clock
    from router.config import MediaConfig
    from router.ingress.ingest import Accepted, Ingest
    from router.metrics import MediaMetrics
    from router.storage.objects import Staged

RECEIVE_CHUNK = 256 << 10  # read from the socket at most this much at a time...
WRITE_CHUNK = 1 << 20  # ...and written to the store (in a thread) this much at a time
KINDS = ("video", "audio")
RETRY_AFTER_S = "1"
NOT_ANNOUNCED: tuple[type[Exception], ...] = (
    *UNAVAILABLE,
    ClassOverloaded,
    RefusedEvents,
    WriteRefused,
)
NOT_YET = "the clip is kept, but its event could not be written yet: retry the same PUT"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
log = structlog.get_logger("switchyard.media")


class Refused(Exception):
    """An upload that cannot be taken: its HTTP status, outcome label and reason."""

    def __init__(self, status: int, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.outcome = outcome


class Unsatisfiable(Exception):
    """A Range that asks for no byte of the clip (416)."""


class Announcer:
    """Writes a stored clip's event and makes the clip visible: for uploads and recovery."""

    def __init__(self, clips: ClipStore, ingest: Ingest, source: str = "http") -> None:
        self.clips = clips
        self.ingest = ingest
        self.source = source

    async def announce(self, clip: Clip) -> tuple[Clip, Accepted]:
        """Ingest the clip's event, then announce the clip; what Ingest raises passes on."""
        [accepted] = await self.ingest.accept(clip.topic, [clip.payload], source=self.source)
        return await self.clips.announce(clip, accepted.id), accepted


class MediaEndpoint:
    """The handlers of `PUT` and `GET /media/<path>`."""

    def __init__(
        self, config: MediaConfig, ingest: Ingest, metrics: MediaMetrics, clock: Clock
    ) -> None:
        self.config = config
        self.store = ObjectStore(config.store)
        self.clips = ClipStore(self.store)
        self.announcer = Announcer(self.clips, ingest)
        self.metrics = metrics
        self.clock = clock
        self.uploads = [(u.path.split("/"), u.topic) for u in config.uploads]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_put("/media/{path:.+}", self.put)
        app.router.add_get("/media/{path:.*}", self.get)

    # --- PUT ---

    async def put(self, request: web.Request) -> web.Response:
        path = request.match_info["path"].strip("/")
        try:
            reply, status = await self._store(request, path)
        except Refused as exc:
            self.metrics.uploads.labels(exc.outcome).inc()
            headers = {"Retry-After": RETRY_AFTER_S} if exc.status == 503 else None
            return web.json_response({"error": str(exc)}, status=exc.status, headers=headers)
        except (RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
            self.metrics.uploads.labels("aborted").inc()
            log.info("clip upload aborted, nothing kept", path=path, error=str(exc))
            return web.json_response({"error": f"the body could not be read: {exc}"}, status=400)
        except Exception:
            self.metrics.uploads.labels("failed").inc()
            log.exception("clip could not be stored", path=path)
            return web.json_response({"error": "the clip could not be stored"}, status=500)
        self.metrics.uploads.labels("stored" if status == 201 else "repeated").inc()
        return web.json_response(reply, status=status)

    async def _store(self, request: web.Request, path: str) -> tuple[dict[str, Any], int]:
        """Receive, check, publish and announce one clip; the reply and its status."""
        topic_template = self._upload_topic(path)
        kind = self._kind(request.content_type)
        limit = self.config.max_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refused(413, "too_large", f"a clip is at most {limit} bytes")
        md5, sha256 = _checksums(request)
        digests = ("sha256", "md5") if md5 is not None else ("sha256",)
        async with self.store.staged(path, digests) as staged:
            await _receive(request, staged, limit)
            _verify(staged, md5, sha256)
            clip = self._clip(path, kind, request.content_type, topic_template, staged)
            existing = await self.clips.find(path)
            if existing is not None:
                return await self._again(existing, clip), 200
            await self.clips.begin(clip, staged)
        try:
            clip, accepted = await self.announcer.announce(clip)
        except NOT_ANNOUNCED as exc:  # kept pending: a retry, or the next sweep, announces it
            log.warning("clip stored, its event not written yet", path=path, error=str(exc))
            raise Refused(503, "unavailable", NOT_YET) from None
        self.metrics.uploaded_bytes.inc(clip.size)
        log.info("clip stored", path=path, bytes=clip.size, event_id=accepted.id)
        return _reply(clip, accepted), 201

    async def _again(self, existing: Clip, clip: Clip) -> dict[str, Any]:
        """A PUT at a stored clip's path: the same bytes again is a retry (announced again,
        which Redis de-duplicates); other bytes are a conflict."""
        if existing.sha256 != clip.sha256:
            raise Refused(409, "conflict", "another clip is stored at this path")
        try:
            existing, accepted = await self.announcer.announce(existing)
        except NOT_ANNOUNCED:
            raise Refused(503, "unavailable", NOT_YET) from None
        return _reply(existing, accepted)

    def _upload_topic(self, path: str) -> str:
        """The topic template of the upload rule `path` falls under; 404 when none."""
        levels = path.split("/")
        if not _valid(levels) or levels[-1].endswith(".pending"):
            raise Refused(400, "bad_request", "levels are letters, digits and `_.-`")
        for pattern, topic in self.uploads:
            if _matches(pattern, levels):
                return topic
        raise Refused(404, "bad_request", f"no upload path takes /media/{path}")

    def _kind(self, content_type: str) -> str:
        kind = content_type.partition("/")[0]
        if kind not in KINDS:
            raise Refused(415, "unsupported_type", "a clip is video/* or audio/*")
        return kind

    def _clip(self, path: str, kind: str, content_type: str, topic: str, staged: Staged) -> Clip:
        levels = path.split("/")
        sha256 = staged.hexdigest("sha256")
        payload = {
            "event_id": event_id_of(path, sha256),
            "clip_id": levels[-1],
            "device_id": levels[-2],
            "kind": kind,
            "content_type": content_type,
            "bytes": staged.size,
            "sha256": sha256,
            "url": f"/media/{path}",
        }
        topic = topic.replace("{kind}", kind)
        for index, level in enumerate(levels):
            topic = topic.replace(f"{{{index}}}", level)
        return Clip(path, content_type, staged.size, sha256, self.clock.wall(), topic, payload)

    # --- GET ---

    async def get(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"].strip("/")
        levels = path.split("/") if path else []
        if not _valid(levels):
            return web.json_response({"error": "no such clip"}, status=404)
        if self._clip_path(levels):
            clip = await self.clips.find(path)
            if clip is None:
                return web.json_response({"error": "no such clip"}, status=404)
            return await self._stream(request, clip)
        clips, truncated = await self.clips.listing(path)
        listed = [_listed(clip) for clip in clips]
        return web.json_response({"path": path, "clips": listed, "truncated": truncated})

    def _clip_path(self, levels: list[str]) -> bool:
        return any(_matches(pattern, levels) for pattern, _ in self.uploads)

    async def _stream(self, request: web.Request, clip: Clip) -> web.StreamResponse:
        """The clip, or the one byte range asked for, read a chunk at a time."""
        size = clip.size
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{clip.sha256}"'}
        try:
            found = byte_range(request.headers.get("Range"), size)
        except Unsatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            return web.json_response(
                {"error": "the range holds no byte of the clip"}, status=416, headers=headers
            )
        start, length, status = (0, size, 200) if found is None else (*found, 206)
        if found is not None:
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = clip.content_type
        response.content_length = length
        await response.prepare(request)
        if request.method != "HEAD":
            async with contextlib.aclosing(self.store.read(clip.path, start, length)) as chunks:
                async for chunk in chunks:
                    await response.write(chunk)
        await response.write_eof()
        return response


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) of a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; None for the
    whole clip (no header, or one this does not take: several ranges, another unit).
    Raises Unsatisfiable when the range holds no byte of the clip."""
    found = _RANGE.match(header.strip()) if header else None
    if found is None:
        return None
    first, last = found.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - suffix), min(suffix, size)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise Unsatisfiable(header)
    return start, end - start + 1


async def _receive(request: web.Request, staged: Staged, limit: int) -> None:
    """Stream the body into `staged`, WRITE_CHUNK at a time, receiving the next chunk while
    the last is written (two buffers at most); 413 once past `limit`."""
    buffer = bytearray()
    received = 0
    writing: asyncio.Task[None] | None = None
    try:
        async for chunk in request.content.iter_chunked(RECEIVE_CHUNK):
            received += len(chunk)
            if received > limit:
                raise Refused(413, "too_large", f"a clip is at most {limit} bytes")
            buffer += chunk
            if len(buffer) >= WRITE_CHUNK:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(staged.write(bytes(buffer)))
                buffer.clear()
    finally:
        if writing is not None:  # a write in a thread cannot be stopped: let it finish
            await asyncio.wait([writing])
    if writing is not None:
        writing.result()
    if buffer:
        await staged.write(bytes(buffer))
    if received == 0:
        raise Refused(400, "bad_request", "an empty clip")


def _checksums(request: web.Request) -> tuple[bytes | None, str | None]:
    """The client's Content-MD5 (decoded) and X-Checksum-SHA256 (hex), when given."""
    md5_text = request.headers.get("Content-MD5")
    sha_text = request.headers.get("X-Checksum-SHA256")
    md5 = None
    if md5_text is not None:
        try:
            md5 = base64.b64decode(md5_text, validate=True)
        except (binascii.Error, ValueError):
            md5 = b""
        if len(md5) != 16:
            raise Refused(400, "bad_request", "Content-MD5 is 16 bytes in base64")
    if sha_text is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha_text):
        raise Refused(400, "bad_request", "X-Checksum-SHA256 is 64 hex digits")
    return md5, sha_text.lower() if sha_text is not None else None


def _verify(staged: Staged, md5: bytes | None, sha256: str | None) -> None:
    if md5 is not None and staged.digest("md5") != md5:
        raise Refused(400, "bad_checksum", "the body does not match Content-MD5")
    if sha256 is not None and staged.hexdigest("sha256") != sha256:
        raise Refused(400, "bad_checksum", "the body does not match X-Checksum-SHA256")


def _valid(levels: list[str]) -> bool:
    return all(MEDIA_LEVEL.match(level) for level in levels)


def _matches(pattern: list[str], levels: list[str]) -> bool:
    return len(pattern) == len(levels) and all(
        p in ("+", level) for p, level in zip(pattern, levels, strict=True)
    )


def _reply(clip: Clip, accepted: Accepted) -> dict[str, Any]:
    reply = {**clip.payload, "class": accepted.cls}
    if accepted.duplicate:
        reply["duplicate"] = True
    return reply


def _listed(clip: Clip) -> dict[str, Any]:
    return {
        "url": clip.payload.get("url", f"/media/{clip.path}"),
        "clip_id": clip.path.rsplit("/", 1)[-1],
        "content_type": clip.content_type,
        "bytes": clip.size,
        "sha256": clip.sha256,
        "stored_at": clip.stored_at,
        "event_id": clip.event_id,
    }
