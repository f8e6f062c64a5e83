"""An object store on a local disk or an S3-compatible service, where an object appears whole
or not at all.

A store is named by a URL: a path (`.switchyard/media`, `file:///srv/media`) or
`s3://bucket/prefix`. For S3 the endpoint and credentials come from the environment, as every
S3 tool reads them: `AWS_ENDPOINT_URL` (a local or non-AWS store), `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`. Keys are `/`-separated paths under the root.

Publication is atomic. On disk an object is written under a hidden temporary name in its own
folder, fsynced, renamed, and the folder fsynced: a SIGKILL or a power cut leaves the old state
or the whole object, never part of one. For S3 it is first staged in a local temporary file,
so the upload reads only bytes already complete (a failure while they arrive can never
complete a partial multipart upload), then uploaded and its size checked. Names starting with
`.` are never listed unless asked for: that is where writes in progress live.

The methods block (pyarrow's file systems do): the service calls them through
`asyncio.to_thread`. `Staged` (a streamed write) and `read` (a streamed, ranged read) do that
themselves, a chunk at a time, so neither holds an object in memory nor blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar
from urllib.parse import urlsplit

import pyarrow.fs as pafs

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable

S3_CONNECT_TIMEOUT_S = 5.0
S3_REQUEST_TIMEOUT_S = 30.0
TEMPORARY = ".writing"  # the suffix of an object still being written on disk: never listed
UPLOAD_CHUNK = 8 << 20
READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its key under the store's root, size and modification time."""

    key: str
    size: int
    mtime: float  # Unix seconds

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class ObjectStore:
    """Objects under one root, on a local disk or in an S3-compatible store."""

    TEMPORARY: ClassVar[str] = TEMPORARY

    def __init__(self, url: str, *, request_timeout_s: float = S3_REQUEST_TIMEOUT_S) -> None:
        self.url = url
        parts = urlsplit(url)
        self.is_local = parts.scheme in ("", "file")
        if self.is_local:
            self.root = str(Path(parts.path if parts.scheme else url).resolve())
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
        elif parts.scheme == "s3":
            self.root = f"{parts.netloc}{parts.path}".rstrip("/")
            self.fs = s3_filesystem(request_timeout_s)
        else:
            raise ValueError(f"store {url!r}: a path, file:// or s3:// URL")

    def path(self, key: str) -> str:
        """The file system path of `key`."""
        return f"{self.root}/{key}" if key else self.root

    # --- writing ---

    def scratch(self, key: str) -> str:
        """A local path to build object `key` in before `publish_file`: a hidden, unique name
        beside it on disk, a file in the machine's temporary folder for an object store."""
        if not self.is_local:
            descriptor, path = tempfile.mkstemp(prefix="switchyard-")
            os.close(descriptor)
            return path
        folder, _, name = self.path(key).rpartition("/")
        self.fs.create_dir(folder, recursive=True)
        return f"{folder}/.{name}.{uuid.uuid4().hex[:8]}{TEMPORARY}"

    def publish_file(self, key: str, built: str, content_type: str | None = None) -> int:
        """Publish the object built at `built` (a `scratch` path) whole, as `key`; returns its
        size. `built` is gone afterwards, published or not."""
        final = self.path(key)
        if self.is_local:
            folder = final.rpartition("/")[0]
            _fsync(built)
            self.fs.move(built, final)  # atomic within one file system
            _fsync(folder)  # and the new name survives a power cut
            return int(self.fs.get_file_info(final).size)
        try:  # every byte is here: only the upload can fail, and then it is not complete
            size = os.path.getsize(built)
            metadata = {"Content-Type": content_type} if content_type else None
            with (
                open(built, "rb") as source,
                self.fs.open_output_stream(final, metadata=metadata) as out,
            ):
                while chunk := source.read(UPLOAD_CHUNK):
                    out.write(chunk)
        finally:
            os.unlink(built)
        if self.fs.get_file_info(final).size != size:
            self.fs.delete_file(final)
            raise OSError(f"{final}: the store kept a different object than was uploaded")
        return size

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Publish a small object whole (a manifest, say)."""
        built = self.scratch(key)
        try:
            Path(built).write_bytes(data)
        except BaseException:
            _unlink(built)
            raise
        self.publish_file(key, built, content_type)

    def staged(self, key: str, digests: Iterable[str] = ("sha256",)) -> Staged:
        """A streamed write of `key`: `async with store.staged(key) as staged:`."""
        return Staged(self, key, digests)

    def delete(self, key: str) -> bool:
        """Delete object `key`; False when there was none."""
        try:
            self.fs.delete_file(self.path(key))
        except FileNotFoundError:
            return False
        return True

    # --- reading ---

    def info(self, key: str) -> ObjectInfo | None:
        """Object `key`, or None when there is none."""
        found = self.fs.get_file_info(self.path(key))
        if found.type != pafs.FileType.File:
            return None
        return self._info(found)

    def list(self, prefix: str = "", *, hidden: bool = False) -> list[ObjectInfo]:
        """Every object under `prefix` (a folder), sorted by key; with `hidden`, also those
        with a name or folder starting with `.` (writes in progress, say)."""
        folder = self.path(prefix.strip("/"))
        if self.fs.get_file_info(folder).type != pafs.FileType.Directory:
            return []
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        found = [
            self._info(entry)
            for entry in self.fs.get_file_info(selector)
            if entry.type == pafs.FileType.File
        ]
        if not hidden:
            found = [o for o in found if not any(p.startswith(".") for p in o.key.split("/"))]
        return sorted(found, key=lambda o: o.key)

    def read_bytes(self, key: str) -> bytes:
        """A small object whole (a manifest, say); FileNotFoundError when there is none."""
        with self.fs.open_input_stream(self.path(key)) as source:
            data: bytes = source.read()
            return data

    async def read(
        self, key: str, start: int = 0, length: int | None = None, chunk: int = READ_CHUNK
    ) -> AsyncGenerator[bytes, None]:
        """Bytes `start` to `start + length` of `key` (to its end by default), a chunk at a
        time, each read in a thread. Close it (`contextlib.aclosing`) when stopping early."""
        source = await asyncio.to_thread(self.fs.open_input_file, self.path(key))
        try:
            left = (await asyncio.to_thread(source.size)) - start if length is None else length
            offset = start
            while left > 0:
                data: bytes = await asyncio.to_thread(source.read_at, min(chunk, left), offset)
                if not data:
                    raise OSError(f"{key}: ended {left} bytes early")
                offset += len(data)
                left -= len(data)
                yield data
        finally:
            await asyncio.shield(asyncio.to_thread(source.close))

    def _info(self, entry: pafs.FileInfo) -> ObjectInfo:
        key = entry.path[len(self.root) + 1 :]
        mtime = entry.mtime.timestamp() if entry.mtime is not None else 0.0
        return ObjectInfo(key, int(entry.size), mtime)


class Staged:
    """An object being written: chunks go to a scratch file in a thread, hashed on the way;
    `publish` makes it visible whole. Leaving `async with` unpublished removes the scratch."""

    def __init__(self, store: ObjectStore, key: str, digests: Iterable[str]) -> None:
        self.store = store
        self.key = key
        self.size = 0
        self._hashes = {name: hashlib.new(name) for name in digests}
        self._path: str | None = None
        self._file: BinaryIO | None = None
        self._done = False

    async def __aenter__(self) -> Staged:
        self._path = await asyncio.to_thread(self.store.scratch, self.key)
        self._file = await asyncio.to_thread(open, self._path, "wb")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self._done:
            await asyncio.shield(asyncio.to_thread(self._discard))

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    def hexdigest(self, name: str) -> str:
        return self._hashes[name].hexdigest()

    def digest(self, name: str) -> bytes:
        return self._hashes[name].digest()

    async def publish(self, content_type: str | None = None) -> int:
        """Make the object visible whole under its key; returns its size."""
        assert self._path is not None, "use it in `async with`"
        assert self._file is not None, "use it in `async with`"
        await asyncio.to_thread(self._file.close)
        self._done = True
        return await asyncio.to_thread(self.store.publish_file, self.key, self._path, content_type)

    def _write(self, data: bytes) -> None:
        assert self._file is not None, "use it in `async with`"
        self._file.write(data)
        for found in self._hashes.values():
            found.update(data)  # hashlib lets go of the GIL for large buffers
        self.size += len(data)

    def _discard(self) -> None:
        self._done = True
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            _unlink(self._path)


def s3_filesystem(request_timeout_s: float = S3_REQUEST_TIMEOUT_S) -> pafs.S3FileSystem:
    """An S3 file system configured from the usual environment variables."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    options: dict[str, Any] = {
        "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "connect_timeout": min(S3_CONNECT_TIMEOUT_S, request_timeout_s),
        "request_timeout": request_timeout_s,
    }
    if endpoint:
        parts = urlsplit(endpoint)
        options |= {"endpoint_override": parts.netloc, "scheme": parts.scheme or "https"}
    return pafs.S3FileSystem(**options)


def _fsync(path: str) -> None:
    """What `path` (a file, or a folder's entries) holds is on disk when this returns."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
