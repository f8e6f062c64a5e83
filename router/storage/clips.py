"""Media clips in an object store: each clip's bytes beside small hidden manifests that say
what it is, and whether the event announcing it was written.

For a clip at `doorbell/front/c1` the store holds `doorbell/front/c1` (the bytes),
`doorbell/front/.c1.pending.json` while it is being announced, and `doorbell/front/.c1.json`
once its event is in Redis. Only a clip with that last manifest is served or listed.

Storing a clip goes: pending manifest (naming the event to come, with a deterministic id),
bytes, event, announced manifest, pending manifest removed. Deleting one goes: bytes, then
manifests. So whatever step a crash interrupts, a sweep (`ClipStore.sweep`) finds a pending
manifest, and either the bytes are whole (then the caller writes the event, which Redis
de-duplicates by its id if it had arrived, and announces the clip) or they are not (then the
manifest goes). Hidden scratch files left by a write that died are removed once untouched for
as long.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from router.storage.objects import ObjectInfo, ObjectStore, Staged

ANNOUNCED = ".json"
PENDING = ".pending.json"
log = structlog.get_logger("switchyard.media")
LISTED = 1000  # a listing names at most this many clips, newest first


@dataclass(frozen=True, slots=True)
class Clip:
    """One clip's manifest: what it is, and the event that announces it."""

    path: str  # its key in the store, and its URL under /media/
    content_type: str
    size: int
    sha256: str
    stored_at: float  # Unix seconds
    topic: str
    payload: dict[str, Any] = field(default_factory=dict)  # the event, its id included
    event_id: str | None = None  # once the event is written

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Clip:
        return cls(**json.loads(data))


@dataclass(slots=True)
class Sweep:
    """What one pass over the store found and did."""

    expired: int = 0  # clips deleted for their age
    abandoned: int = 0  # pending clips whose bytes never arrived, and stale scratch files
    stored_bytes: int = 0  # what the announced clips that remain hold
    recover: list[Clip] = field(default_factory=list)  # stored, event never written


def event_id_of(path: str, sha256: str) -> str:
    """The event id of a clip's announcement: the same for the same bytes at the same path,
    so an announcement written again (a retried PUT, a recovery) is de-duplicated."""
    return "clip-" + hashlib.sha256(f"{path}\n{sha256}".encode()).hexdigest()[:32]


def manifest_key(path: str, suffix: str) -> str:
    folder, _, name = path.rpartition("/")
    return f"{folder}/.{name}{suffix}" if folder else f".{name}{suffix}"


class ClipStore:
    """Clips and their manifests in `store`; every call runs the store's I/O in a thread."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def find(self, path: str) -> Clip | None:
        """The announced clip at `path`, or None."""
        return await asyncio.to_thread(self._read, manifest_key(path, ANNOUNCED))

    async def begin(self, clip: Clip, staged: Staged) -> None:
        """Write the pending manifest, then publish the clip's bytes."""
        pending = manifest_key(clip.path, PENDING)
        await asyncio.to_thread(self.store.put_bytes, pending, clip.encode(), "application/json")
        await staged.publish(clip.content_type)

    async def announce(self, clip: Clip, event_id: str) -> Clip:
        """The clip's event is written: make it visible."""
        done = replace(clip, event_id=event_id)
        await asyncio.to_thread(self._announce, done)
        return done

    async def delete(self, path: str) -> None:
        """Delete a clip: its bytes first, then its manifests."""
        await asyncio.to_thread(self._delete, path)

    async def listing(self, prefix: str) -> tuple[list[Clip], bool]:
        """The announced clips under `prefix`, newest first, at most LISTED of them; and
        whether there were more."""
        return await asyncio.to_thread(self._listing, prefix)

    async def sweep(self, now: float, retention_s: float, recover_after_s: float) -> Sweep:
        """One pass: delete clips older than `retention_s` and what a dead write left; return
        the pending clips, waiting over `recover_after_s` with whole bytes, to announce."""
        return await asyncio.to_thread(self._sweep, now, retention_s, recover_after_s)

    # --- blocking parts, run in threads ---

    def _read(self, key: str) -> Clip | None:
        try:
            return Clip.decode(self.store.read_bytes(key))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):  # never written so (manifests are published whole)
            log.warning("unreadable clip manifest", key=key)
            return None

    def _announce(self, clip: Clip) -> None:
        self.store.put_bytes(manifest_key(clip.path, ANNOUNCED), clip.encode(), "application/json")
        self.store.delete(manifest_key(clip.path, PENDING))

    def _delete(self, path: str) -> None:
        self.store.delete(path)
        self.store.delete(manifest_key(path, ANNOUNCED))
        self.store.delete(manifest_key(path, PENDING))

    def _listing(self, prefix: str) -> tuple[list[Clip], bool]:
        objects = {o.key: o for o in self.store.list(prefix, hidden=True)}
        paths = [
            key for key in objects if not _hidden(key) and manifest_key(key, ANNOUNCED) in objects
        ]
        paths.sort(key=lambda key: objects[key].mtime, reverse=True)
        clips = [self._read(manifest_key(key, ANNOUNCED)) for key in paths[:LISTED]]
        return [clip for clip in clips if clip is not None], len(paths) > LISTED

    def _sweep(self, now: float, retention_s: float, recover_after_s: float) -> Sweep:
        done = Sweep()
        objects = {o.key: o for o in self.store.list("", hidden=True)}
        for key, info in objects.items():
            if _hidden(key):
                self._sweep_hidden(done, objects, info, now, recover_after_s)
            elif now - info.mtime > retention_s:
                self._delete(key)
                done.expired += 1
            elif manifest_key(key, ANNOUNCED) in objects:
                done.stored_bytes += info.size
        return done

    def _sweep_hidden(
        self,
        done: Sweep,
        objects: dict[str, ObjectInfo],
        info: ObjectInfo,
        now: float,
        recover_after_s: float,
    ) -> None:
        """A manifest or a scratch file: gone with its clip, stale, or a clip to recover."""
        if now - info.mtime <= recover_after_s:
            return  # maybe a write still under way
        folder, _, name = info.key.rpartition("/")
        if name.endswith(self.store.TEMPORARY):
            self.store.delete(info.key)  # untouched for so long: its writer died
            done.abandoned += 1
            return
        path = f"{folder}/{name[1:].removesuffix(PENDING)}".lstrip("/")
        if name.endswith(PENDING):
            clip = self._read(info.key)
            if manifest_key(path, ANNOUNCED) in objects or clip is None:
                self.store.delete(info.key)  # announced already (a crash before this went)
            elif path in objects and objects[path].size == clip.size:
                done.recover.append(clip)
            else:
                self._delete(path)  # the bytes never arrived whole
                done.abandoned += 1
        elif name.endswith(ANNOUNCED) and path.removesuffix(ANNOUNCED) not in objects:
            self.store.delete(info.key)  # its clip was deleted: a crash before this went


def _hidden(key: str) -> bool:
    return any(part.startswith(".") for part in key.split("/"))
