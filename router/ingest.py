"""Ingest: decode a body, route each event, wrap it in an envelope and append it to its stream.

Every ingress (HTTP, MQTT, emits from actors) goes through here, so routing, size limits,
unrouted handling and the ingest metrics behave the same whatever the source.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import orjson
import structlog

from router import keys
from router.envelope import Envelope, new_event_id
from router.errors import (
    ClassOverloaded,
    DecodeError,
    EventTooLarge,
    InvalidEvent,
    RefusedEvents,
    kind_of,
)
from router.transport import Fields, Outgoing, StreamStats, Transport
from router.writer import Writer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from router.clock import Clock
    from router.config import Config
    from router.metrics import Metrics
    from router.routing import Router

# 19 digits in a row may not fit 64 bits (signed or not). Every digit read as "0", then a
# substring search: two C-speed passes, where a regular expression costs ~1 ms per 100 kB.
_LONG_NUMBER = b"0" * 19
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
SOURCE_ID_FIELD = "event_id"
SOURCE_TS_FIELD = "timestamp"
ERROR_CHARS = 2000  # of an error message or an excerpt kept with a rejected event

log = structlog.get_logger("switchyard.ingest")


class Accepted(NamedTuple):
    """What became of one ingested event: its id and class (None when it was unrouted), and
    whether its source id had already arrived (then it was not written again)."""

    id: str
    cls: str | None
    duplicate: bool = False

    def as_json(self) -> dict[str, Any]:
        if self.cls is None:
            return {"id": self.id, "class": None, "unrouted": True}
        if self.duplicate:
            return {"id": self.id, "class": self.cls, "duplicate": True}
        return {"id": self.id, "class": self.cls}


# What parsing untrusted bytes may raise: bad syntax, nesting too deep (RecursionError), a
# msgpack map keyed by a list or map (TypeError, unhashable).
_MSGPACK_ERRORS = (
    ValueError,
    TypeError,
    RecursionError,
    msgpack.ExtraData,
    msgpack.FormatError,
    msgpack.StackError,
)


def decode_body(body: bytes, content_type: str | None = "application/json") -> list[Any]:
    """The events in a body: an object is one event, an array a batch of them.

    `content_type` None (MQTT carries none) means JSON if it parses, else msgpack. Raises
    DecodeError for bytes that do not decode and InvalidEvent for an empty array. The elements
    are returned as they are: whether each is an object is judged event by event, so one bad
    element never takes its neighbours with it.
    """
    kind = "msgpack" if _is_msgpack(content_type) else "JSON"
    try:
        value = (
            msgpack.unpackb(body, raw=False, strict_map_key=False)
            if kind == "msgpack"
            else _json(body)
        )
    except _MSGPACK_ERRORS as exc:
        if content_type is not None:
            raise DecodeError(f"body is not valid {kind}: {exc}") from exc
        try:
            value = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except _MSGPACK_ERRORS as again:
            raise DecodeError(f"body is neither JSON nor msgpack: {again}") from again
    events = value if isinstance(value, list) else [value]
    if not events:
        raise InvalidEvent("the body is an empty array")
    return events


def check_batch_size(events: list[Any], limit: int) -> list[Any]:
    """`events`, unless there are more than `limit` of them (EventTooLarge): one message or
    request must not hold Redis, nor this process, for long."""
    if len(events) > limit:
        raise EventTooLarge(len(events), limit, batch=True)
    return events


def check_object(event: Any, index: int) -> dict[str, Any]:
    """`event` if it is an object (a JSON object, a msgpack map); else InvalidEvent."""
    if not isinstance(event, dict):
        raise InvalidEvent(f"event {index} is a {type(event).__name__}, not an object")
    return event


def _json(body: bytes) -> Any:
    """orjson for speed, Python's json where they differ, so both accept the same bodies with
    the same values: orjson refuses numbers beyond a double and reads integers beyond 64 bits
    as floats (a changed value), so a body with 19 digits in a row takes the slow path."""
    if _LONG_NUMBER not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def _is_msgpack(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() in MSGPACK_TYPES


def source_timestamp(payload: Any) -> float | None:
    """The source's own timestamp as Unix seconds, when it stamped the event legibly."""
    if not isinstance(payload, dict):
        return None
    value = payload.get(SOURCE_TS_FIELD)
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value) / 1000 if value > 1e11 else float(value)
            return seconds if math.isfinite(seconds) else None
        if isinstance(value, str):
            return _iso_seconds(value)
    except (ValueError, OverflowError, OSError):
        return None  # illegible or out of range: the event is kept, unstamped
    return None


@functools.lru_cache(maxsize=1024)
def _iso_seconds(text: str) -> float:
    """Unix seconds of an ISO 8601 time, UTC unless it says otherwise. Cached: events of a
    burst carry the same second."""
    stamp = datetime.fromisoformat(text)
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


class Ingest:
    """Turns (topic, payload) pairs into durable stream entries."""

    def __init__(
        self, config: Config, router: Router, transport: Transport, metrics: Metrics, clock: Clock
    ) -> None:
        self.config = config
        self.router = router
        self.transport = transport
        self.writer = Writer(transport)  # the service runs `writer.run()`; else direct writes
        self.metrics = metrics
        self.clock = clock
        self.max_event_bytes = config.service.max_event_bytes
        self.max_batch_events = config.service.max_batch_events
        self._lanes = {name: cls.lane for name, cls in config.classes.items()}
        self._refusing = {
            name: cls.shed
            for name, cls in config.classes.items()
            if cls.shed is not None and cls.shed.action == "refuse"
        }
        self.stats: Mapping[str, StreamStats] = {}  # kept fresh by the service's stats loop

    def check_capacity(self, cls: str) -> None:
        """Raise ClassOverloaded when `cls` sheds load by refusal and is past its bound."""
        shed = self._refusing.get(cls)
        stats = self.stats.get(cls)
        if shed is None or stats is None:
            return
        if shed.max_backlog is not None and stats.backlog + stats.pending > shed.max_backlog:
            raise ClassOverloaded(
                cls, f"{stats.backlog + stats.pending} waiting > {shed.max_backlog}"
            )
        if shed.max_age_ms is not None and stats.oldest_ms is not None:
            age_ms = self.clock.wall() * 1000 - stats.oldest_ms
            if age_ms > shed.max_age_ms:
                raise ClassOverloaded(
                    cls, f"oldest waiting {age_ms / 1000:.1f}s > {shed.max_age_ms / 1000:g}s"
                )

    def for_class(
        self,
        cls: str,
        payload: Any,
        *,
        key: str | None,
        source: str,
        topic: str = "",
        event_id: str | None = None,
        source_ts: float | None = None,
        ingest_ts: float | None = None,
    ) -> Envelope:
        """An envelope for a known class, ingested now or at `ingest_ts`."""
        return Envelope(
            id=event_id or new_event_id(),
            cls=cls,
            lane=self._lanes[cls],
            payload=payload,
            key=key,
            source=source,
            topic=topic,
            source_ts=source_ts,
            ingest_ts=self.clock.wall() if ingest_ts is None else ingest_ts,
        )

    def for_topic(
        self,
        topic: str,
        payload: Any,
        *,
        source: str,
        event_id: str | None = None,
        ingest_ts: float | None = None,
    ) -> Envelope | None:
        """An envelope for an event on `topic`, or None when no route matches it."""
        routed = self.router.route(topic, payload)
        if routed is None:
            return None
        return self.for_class(
            routed.cls,
            payload,
            key=routed.key,
            source=source,
            topic=topic,
            event_id=event_id,
            source_ts=source_timestamp(payload),
            ingest_ts=ingest_ts,
        )

    async def accept(self, topic: str, payloads: Sequence[Any], source: str) -> list[Accepted]:
        """Route and append one request's events in one round trip, or none of them.

        Any event that cannot be taken refuses the whole request with RefusedEvents, naming
        each such event, before anything is written: the sender still has every event and can
        send them again, fixed. Unrouted events are taken: kept in the unrouted stream.
        """
        batch = _Batch(self.clock.wall())
        problems: list[tuple[int, InvalidEvent | EventTooLarge]] = []
        for index, payload in enumerate(payloads):
            try:
                self._add(batch, topic, payload, source, index)
            except (InvalidEvent, EventTooLarge) as exc:
                problems.append((index, exc))
        if problems:
            batch.reasons = Counter(kind_of(exc) for _, exc in problems)
            self._count(batch)
            raise RefusedEvents(problems)
        await self._write(batch, source)
        return batch.results

    async def accept_messages(self, messages: Sequence[tuple[str, bytes]], source: str) -> int:
        """Append raw messages (MQTT) in one round trip; what cannot be taken is kept aside.

        A message's events are judged one by one: each that cannot be taken (not an object, a
        value that cannot be stored, over `max_event_bytes`) is kept in the rejected stream on
        its own, with its topic, index and error, and its neighbours go on. A message that
        does not decode, or holds more than `max_batch_events` events, is kept whole (its raw
        bytes, cut at `max_event_bytes`). Returns how many messages had anything kept aside.
        """
        batch = _Batch(self.clock.wall())
        kept_messages = 0
        for topic, body in messages:
            kept_before = len(batch.kept)
            self._add_message(batch, topic, body, source)
            kept_messages += len(batch.kept) > kept_before
        await self._write(batch, source)
        return kept_messages

    async def keep_unwritable(
        self, messages: Sequence[tuple[str, bytes]], source: str, error: BaseException
    ) -> None:
        """Keep messages whose events Redis would not take (not for being away): raw, aside."""
        batch = _Batch(self.clock.wall())
        for topic, body in messages:
            batch.reject(self._raw_fields(topic, source, body, "write_error", repr(error)))
        await self._write(batch, source)

    def _add_message(self, batch: _Batch, topic: str, body: bytes, source: str) -> None:
        try:
            payloads = check_batch_size(decode_body(body, None), self.max_batch_events)
        except (DecodeError, InvalidEvent, EventTooLarge) as exc:
            reason = "decode_error" if isinstance(exc, DecodeError) else kind_of(exc)
            batch.reject(self._raw_fields(topic, source, body, reason, str(exc)))
            return
        for index, payload in enumerate(payloads):
            try:
                self._add(batch, topic, payload, source, index)
            except (InvalidEvent, EventTooLarge) as exc:
                batch.reject(self._element_fields(topic, source, payload, index, exc))

    def _add(self, batch: _Batch, topic: str, payload: Any, source: str, index: int) -> None:
        """Route one event and add it to the batch; every way it can fail is InvalidEvent or
        EventTooLarge (ClassOverloaded aside), so one event never fails the whole call."""
        try:
            self._route_into(batch, topic, check_object(payload, index), source, index)
        except (InvalidEvent, EventTooLarge, ClassOverloaded):
            raise
        except Exception as exc:
            log.exception("event could not be ingested", topic=topic, index=index)
            raise InvalidEvent(f"event {index}: {exc!r}", kind="internal_error") from exc

    def _route_into(
        self, batch: _Batch, topic: str, payload: dict[str, Any], source: str, index: int
    ) -> None:
        source_id = _source_id(payload)  # kept as the event id, and de-duplicated on arrival
        envelope = self.for_topic(
            topic, payload, source=source, event_id=source_id, ingest_ts=batch.ingest_ts
        )
        if envelope is None:
            event_id = source_id or new_event_id()
            packed = _encoded(lambda: msgpack.packb(payload, use_bin_type=True), index)
            self._check_size(len(packed), index)
            batch.reject(self._unrouted_fields(event_id, topic, source, packed))
            batch.results.append(Accepted(event_id, None))
            return
        if self._refusing:
            try:
                self.check_capacity(envelope.cls)
            except ClassOverloaded:
                self.metrics.shed.labels(envelope.cls, "refuse").inc()
                raise
        data = _encoded(envelope.encode, index)
        self._check_size(len(data), index)
        batch.entries.append(Outgoing(envelope.cls, data, dedup_id=source_id))
        batch.entry_results.append(len(batch.results))
        batch.results.append(Accepted(envelope.id, envelope.cls))

    def _check_size(self, size: int, index: int) -> None:
        if size > self.max_event_bytes:
            raise EventTooLarge(size, self.max_event_bytes, index)

    async def _write(self, batch: _Batch, source: str) -> None:
        """One round trip for the whole batch; metrics only once Redis has it.

        An event whose source id arrived in its class within the de-duplication window is
        acknowledged but not written again, whatever it holds: it is counted and flagged.
        """
        ids = await self.writer.publish(batch.entries, batch.kept)
        written: Counter[str] = Counter()
        repeated: Counter[str] = Counter()
        for item, stream_id, at in zip(batch.entries, ids, batch.entry_results, strict=True):
            if stream_id:
                written[item.cls] += 1
            else:
                repeated[item.cls] += 1
                batch.results[at] = batch.results[at]._replace(duplicate=True)
        for cls, count in written.items():
            self.metrics.ingested.labels(cls, source).inc(count)
        for cls, count in repeated.items():
            self.metrics.deduplicated.labels(cls, source).inc(count)
            log.info("repeated event ids not written again", **{"class": cls}, count=count)
        self._count(batch)

    def _count(self, batch: _Batch) -> None:
        for reason, count in batch.reasons.items():
            self.metrics.rejected.labels(reason).inc(count)

    def _unrouted_fields(self, event_id: str, topic: str, source: str, packed: bytes) -> Fields:
        return {
            "id": event_id,
            "reason": "unrouted",
            "topic": topic,
            "source": source,
            "ingest_ts": self.clock.wall(),
            "payload": packed,
        }

    def _element_fields(
        self, topic: str, source: str, payload: Any, index: int, exc: InvalidEvent | EventTooLarge
    ) -> Fields:
        """One event of a message kept aside: as msgpack when it can be (so it can be
        replayed once the cause is fixed), else a short excerpt of it."""
        fields: dict[str, str | bytes | int | float] = {
            "reason": kind_of(exc),
            "error": str(exc)[:ERROR_CHARS],
            "topic": topic,
            "source": source,
            "index": index,
            "ingest_ts": self.clock.wall(),
        }
        try:
            packed = msgpack.packb(payload, use_bin_type=True)
        except (OverflowError, TypeError, ValueError):
            packed = None
        if packed is not None and len(packed) <= self.max_event_bytes:
            fields["payload"] = packed
        else:
            fields["excerpt"] = repr(payload)[:ERROR_CHARS]
        return fields

    def _raw_fields(self, topic: str, source: str, raw: bytes, reason: str, error: str) -> Fields:
        """A whole message kept aside; its raw bytes are cut at `max_event_bytes`, so keeping
        a message never costs more than taking one."""
        fields: dict[str, str | bytes | int | float] = {
            "reason": reason,
            "error": error[:ERROR_CHARS],
            "topic": topic,
            "source": source,
            "ingest_ts": self.clock.wall(),
            "raw": raw[: self.max_event_bytes],
        }
        if len(raw) > self.max_event_bytes:
            fields["raw_bytes"] = len(raw)  # the size it had: `raw` holds its start
        return fields


@dataclass(slots=True)
class _Batch:
    """Everything one ingest call writes, in one round trip."""

    ingest_ts: float  # one read of the clock: the events of one call arrived together
    entries: list[Outgoing] = field(default_factory=list)
    entry_results: list[int] = field(default_factory=list)  # each entry's place in `results`
    kept: list[tuple[str, Fields]] = field(default_factory=list)
    results: list[Accepted] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def reject(self, fields: Fields) -> None:
        reason = str(fields["reason"])
        stream = keys.unrouted() if reason == "unrouted" else keys.rejected()
        self.kept.append((stream, fields))
        self.reasons[reason] += 1


def _encoded(encode: Callable[[], bytes], index: int) -> bytes:
    """msgpack bytes of an event; one that cannot be stored (an integer beyond 64 bits) is
    an invalid event, not a crash."""
    try:
        return encode()
    except (OverflowError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"event {index} cannot be stored: {exc}") from exc


def _source_id(payload: dict[str, Any]) -> str | None:
    value = payload.get(SOURCE_ID_FIELD)
    if isinstance(value, str) and 0 < len(value) <= 128:
        return value
    return None
