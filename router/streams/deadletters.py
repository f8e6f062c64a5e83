"""Dead letters: events kept aside with the reason, and the operations on them (list, show,
replay, purge) behind `switchyard dlq`.

Every class has one dead-letter stream (`sy:{<class>}:dlq`). Handler failures past
`retry.max_attempts`, poison entries (delivered more than `max_deliveries` times) and
undecodable entries land there with the error, the attempt count and the envelope, so that a
fixed actor can replay them. Unrouted and rejected ingress events have streams of their own
(`_unrouted`, `_rejected`) and can be listed and purged the same way.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from router.errors import DecodeError
from router.streams import keys
from router.streams.envelope import Envelope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from router.streams.client import RedisClient
    from router.streams.transport import Fields, Transport

LIST_LIMIT = 1_000
# (topic, payload, event id or None) -> the envelope routing makes of it and its partition's
# tag, or None: unrouted.
Route = Callable[[str, dict[str, Any], str | None], tuple[Envelope, str] | None]


def failure_fields(
    envelope: Envelope, reason: str, error: BaseException | str, failed_ts: float
) -> Fields:
    """A dead letter for an envelope: who, why, how often, and the envelope to replay."""
    if isinstance(error, BaseException):
        error_type = type(error).__name__
        message = "".join(traceback.format_exception_only(type(error), error)).strip()
        frames = traceback.extract_tb(error.__traceback__)[-3:]
        summary = " | ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in frames)
    else:
        error_type, message, summary = reason, error, ""
    return {
        "id": envelope.id,
        "class": envelope.cls,
        "reason": reason,
        "error_type": error_type,
        "error": message[:2000],
        "traceback": summary[:2000],
        "attempts": envelope.attempt + 1,
        "ingest_ts": envelope.ingest_ts,
        "failed_ts": failed_ts,
        "envelope": envelope.encode(),
    }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead-letter stream, decoded for people."""

    entry_id: str
    fields: dict[str, Any]

    def event_id(self) -> str:
        """The id of the event it holds, as text ("" when it has none)."""
        return _text(self.fields.get("id", ""))

    @property
    def envelope(self) -> Envelope | None:
        data = self.fields.get("envelope")
        if not isinstance(data, bytes):
            return None
        try:
            return Envelope.decode(data)
        except DecodeError:
            return None

    def rerouted(self, route: Route) -> tuple[Envelope, str] | None:
        """An ingress reject's event (kept with its topic and payload) routed afresh, with its
        partition; None when it holds no event or still routes nowhere."""
        topic, packed = self.fields.get("topic"), self.fields.get("payload")
        if topic is None or not isinstance(packed, bytes):
            return None
        payload = _unpacked(packed)
        if not isinstance(payload, dict):
            return None
        event_id = self.fields.get("id")
        return route(_text(topic), payload, None if event_id is None else _text(event_id))

    def summary(self) -> dict[str, Any]:
        """The readable fields (bytes shown by size), for `dlq list` and `dlq show`."""
        out: dict[str, Any] = {"entry_id": self.entry_id}
        for name, value in self.fields.items():
            if isinstance(value, bytes):
                try:
                    out[name] = value.decode()
                except UnicodeDecodeError:
                    out[name] = f"<{len(value)} bytes>"
            else:
                out[name] = value
        envelope = self.envelope
        if envelope is not None:
            out["envelope"] = f"<{len(self.fields['envelope'])} bytes>"
            out["payload"] = envelope.payload
        elif isinstance(packed := self.fields.get("payload"), bytes):
            out["payload"] = _unpacked(packed)
        return out


class DeadLetters:
    """The dead-letter stream of one class partition (`tag`), or of ingress rejects."""

    def __init__(self, redis: RedisClient, transport: Transport, tag: str) -> None:
        self.redis = redis
        self.transport = transport
        self.tag = tag
        self.key = keys.dead_letters(tag)

    async def entries(self, since_ms: int = 0, limit: int = LIST_LIMIT) -> list[DeadLetter]:
        """Entries from `since_ms` (Unix milliseconds) on, oldest first."""
        start = f"{since_ms}-0" if since_ms else "-"
        return _decoded(await self.redis.xrange(self.key, min=start, count=limit))

    async def newest(self, limit: int = LIST_LIMIT) -> list[DeadLetter]:
        """The newest `limit` entries, oldest first."""
        return _decoded(await self.redis.xrevrange(self.key, count=limit))[::-1]

    async def chosen(
        self, ids: Collection[str] | None = None, since_ms: int = 0
    ) -> AsyncIterator[list[DeadLetter]]:
        """`pages`, kept to the entries named by entry id or event id: every one when `ids`
        is None, none when it is empty (an empty selection never means all). A page left
        empty is skipped."""
        if ids is not None and not ids:
            return
        wanted = None if ids is None else set(ids)
        async for page in self.pages(since_ms):
            picked = [
                letter
                for letter in page
                if wanted is None or letter.entry_id in wanted or letter.event_id() in wanted
            ]
            if picked:
                yield picked

    async def pages(
        self, since_ms: int = 0, size: int = LIST_LIMIT
    ) -> AsyncIterator[list[DeadLetter]]:
        """Every entry from `since_ms` on that was there when paging began, a page at a time;
        safe to delete while paging. Entries added meanwhile are left for the next call: a
        replayed event that fails again is a new dead letter, and `replay --all` must not
        come back to it (nor loop for as long as it keeps failing)."""
        last: Any = await self.redis.xrevrange(self.key, count=1)
        if not last:
            return
        start, end = (f"{since_ms}-0" if since_ms else "-"), last[0][0]
        while page := _decoded(await self.redis.xrange(self.key, min=start, max=end, count=size)):
            yield page
            start = f"({page[-1].entry_id}"

    async def replay(
        self, letters: Sequence[DeadLetter], route: Route | None = None
    ) -> tuple[int, list[str]]:
        """Put events back into their class stream with their attempts reset.

        Ingress rejects (`_unrouted`, `_rejected`) have no class yet: given `route`, those
        that hold an event are routed again (after a rule was fixed, say). Each entry moves
        only if this call removed it from the dead-letter stream, so a replay that runs twice
        (or on two machines) replays every entry once. Returns the number replayed and the
        entry ids that could not be (no event, no route, or already gone).
        """
        replayed, skipped = 0, []
        for letter in letters:
            envelope, tag = letter.envelope, self.tag  # a class's dead letter: its own partition
            if envelope is None and route is not None:
                envelope, tag = letter.rerouted(route) or (None, tag)
            if envelope is None:
                skipped.append(letter.entry_id)
                continue
            fresh = envelope._replace(attempt=0)
            moved = await self.transport.move_if_deleted(
                self.key, letter.entry_id.encode(), tag, fresh.encode()
            )
            if moved:
                replayed += 1
            else:
                skipped.append(letter.entry_id)
        return replayed, skipped

    async def purge(self, letters: Sequence[DeadLetter]) -> int:
        if not letters:
            return 0
        removed: int = await self.redis.xdel(self.key, *(letter.entry_id for letter in letters))
        return removed


def _unpacked(packed: bytes) -> Any:
    """A kept payload (msgpack); its size as text when it is not readable."""
    try:
        return msgpack.unpackb(packed, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return f"<{len(packed)} bytes>"


def _decoded(entries: Any) -> list[DeadLetter]:
    return [
        DeadLetter(_text(entry_id), {_text(k): v for k, v in fields.items()})
        for entry_id, fields in entries
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
