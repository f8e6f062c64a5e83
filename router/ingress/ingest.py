"""Ingest: route each event of a body or message, wrap it in an envelope, and append it to
its stream, or keep it aside with the reason.

HTTP and MQTT both come through here, so routing, size limits, unrouted handling, shedding
and the ingest metrics behave the same whatever the source. Events are judged one by one:
one that cannot be taken never takes its neighbours with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import structlog

from router.errors import (
    ClassOverloaded,
    DecodeError,
    EventTooLarge,
    InvalidEvent,
    RefusedEvents,
    WriteRefused,
    kind_of,
)
from router.ingress.decode import check_batch_size, check_object, decode_body
from router.ingress.rejects import Rejects
from router.ingress.shedding import Shedding
from router.ingress.writer import Writer
from router.routing.addressing import source_id
from router.streams import keys
from router.streams.envelope import event_id_prefix, new_event_id
from router.streams.transport import Fields, Outgoing

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from router.clock import Clock
    from router.config import Config
    from router.metrics import Metrics
    from router.routing.addressing import Addresser
    from router.routing.rules import TopicRoutes
    from router.streams.transport import Transport

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


class Ingest:
    """Turns (topic, payload) pairs into durable stream entries, or kept rejects."""

    def __init__(
        self,
        config: Config,
        addresser: Addresser,
        transport: Transport,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.addresser = addresser
        self.writer = Writer(transport)  # the service runs `writer.run()`; else direct writes
        self.metrics = metrics
        self.clock = clock
        self.shedding = Shedding(config, clock)
        self.rejects = Rejects(clock, config.service.max_event_bytes)
        self.max_event_bytes = config.service.max_event_bytes
        self.max_batch_events = config.service.max_batch_events
        # (class, key, ingest time) of every routed event: fleet health's reports
        self.on_seen: Callable[[str, str | None, float], None] | None = None

    async def accept(self, topic: str, payloads: Sequence[Any], source: str) -> list[Accepted]:
        """Route and append one request's events in one round trip, or none of them.

        Any event that cannot be taken refuses the whole request with RefusedEvents, naming
        each such event, before anything is written: the sender still has every event and can
        send them again, fixed. Unrouted events are taken: kept in the unrouted stream.
        """
        batch = _Batch(self.clock.wall())
        routes = self.addresser.router.for_topic(topic)  # once for the whole body
        problems: list[tuple[int, InvalidEvent | EventTooLarge]] = []
        for index, payload in enumerate(payloads):
            try:
                self._add(batch, routes, payload, source, index)
            except (InvalidEvent, EventTooLarge) as exc:
                problems.append((index, exc))
        if problems:
            batch.reasons = Counter(kind_of(exc) for _, exc in problems)
            self._count(batch)
            raise RefusedEvents(problems)
        refused = await self._write(batch, source)
        if refused:
            at = [batch.entry_results[i] for i, _ in refused]
            raise WriteRefused([(batch.results[r].id, r) for r in at], refused[0][1])
        return batch.results

    async def accept_messages(self, messages: Sequence[tuple[str, bytes]], source: str) -> int:
        """Append raw messages (MQTT) in one round trip; what cannot be taken is kept aside.

        A message's events are judged one by one: each that cannot be taken (not an object, a
        value that cannot be stored, over `max_event_bytes`) is kept in the rejected stream on
        its own, with its topic, index and error, and its neighbours go on. A message that
        does not decode, or holds more than `max_batch_events` events, is kept whole (its raw
        bytes, cut at `max_event_bytes`). Returns how many messages had anything kept aside.
        """
        batch = _Batch(self.clock.wall(), origins=[])
        kept = set()
        for number, (topic, body) in enumerate(messages):
            kept_before = len(batch.kept)
            batch.message = number
            self._add_message(batch, topic, body, source)
            if len(batch.kept) > kept_before:
                kept.add(number)
        refused = await self._write(batch, source)
        if refused:
            kept |= await self._keep_refused(batch, refused, source)
        return len(kept)

    async def _keep_refused(
        self, batch: _Batch, refused: list[tuple[int, Exception]], source: str
    ) -> set[int]:
        """Keep aside the events Redis refused (not for being away; say a class stream key of
        the wrong type), so that their messages can be acknowledged; returns those messages."""
        assert batch.origins is not None
        aside = _Batch(batch.ingest_ts)
        messages = set()
        for index, error in refused:
            topic, payload, position, message = batch.origins[index]
            problem = InvalidEvent(f"redis refused it: {error}", kind="write_error")
            aside.reject(self.rejects.element(topic, source, payload, position, problem))
            messages.add(message)
        log.error("redis refused events, kept aside", events=len(refused), error=str(refused[0][1]))
        (await self.writer.write([], aside.kept)).checked()
        self._count(aside)
        return messages

    def _add_message(self, batch: _Batch, topic: str, body: bytes, source: str) -> None:
        try:
            payloads = check_batch_size(decode_body(body, None), self.max_batch_events)
        except (DecodeError, InvalidEvent, EventTooLarge) as exc:
            reason = "decode_error" if isinstance(exc, DecodeError) else kind_of(exc)
            batch.reject(self.rejects.raw(topic, source, body, reason, str(exc)))
            return
        routes = self.addresser.router.for_topic(topic)  # once for the message's events
        for index, payload in enumerate(payloads):
            try:
                self._add(batch, routes, payload, source, index)
            except (InvalidEvent, EventTooLarge) as exc:
                batch.reject(self.rejects.element(topic, source, payload, index, exc))

    def _add(
        self, batch: _Batch, routes: TopicRoutes, payload: Any, source: str, index: int
    ) -> None:
        """Route one event and add it to the batch; every way it can fail is InvalidEvent or
        EventTooLarge (ClassOverloaded aside), so one event never fails the whole call."""
        try:
            self._route_into(batch, routes, check_object(payload, index), source, index)
        except (InvalidEvent, EventTooLarge, ClassOverloaded):
            raise
        except Exception as exc:
            log.exception("event could not be ingested", topic=routes.topic, index=index)
            raise InvalidEvent(f"event {index}: {exc!r}", kind="internal_error") from exc

    def _route_into(
        self, batch: _Batch, routes: TopicRoutes, payload: dict[str, Any], source: str, index: int
    ) -> None:
        topic = routes.topic
        event_source_id = source_id(payload)  # kept as the event id, and de-duplicated on arrival
        event_id = event_source_id or new_event_id(batch.id_prefix)
        envelope = self.addresser.for_routes(routes, payload, source, event_id, batch.ingest_ts)
        if envelope is None:
            packed = _encoded(lambda: msgpack.packb(payload, use_bin_type=True), index)
            self._check_size(len(packed), index)
            batch.reject(self.rejects.unrouted(event_id, topic, source, packed))
            batch.results.append(Accepted(event_id, None))
            return
        if self.shedding.refusing:
            try:
                self.shedding.check(envelope.cls)
            except ClassOverloaded:
                self.metrics.shed.labels(envelope.cls, "refuse").inc()
                raise
        data = _encoded(envelope.encode, index)
        self._check_size(len(data), index)
        if self.on_seen is not None:
            self.on_seen(envelope.cls, envelope.key, batch.ingest_ts)
        tag = self.addresser.partition(envelope)
        batch.entries.append(Outgoing(envelope.cls, data, event_source_id, None, tag))
        batch.entry_results.append(len(batch.results))
        batch.results.append(Accepted(envelope.id, envelope.cls))
        if batch.origins is not None:
            batch.origins.append((topic, payload, index, batch.message))

    def _check_size(self, size: int, index: int) -> None:
        if size > self.max_event_bytes:
            raise EventTooLarge(size, self.max_event_bytes, index)

    async def _write(self, batch: _Batch, source: str) -> list[tuple[int, Exception]]:
        """One round trip for the whole batch; metrics only once Redis has it. Returns the
        entries Redis refused (index, error); a refused reject (kept stream) is raised.

        An event whose source id arrived in its class within the de-duplication window is
        acknowledged but not written again, whatever it holds: it is counted and flagged.
        """
        written = await self.writer.write(batch.entries, batch.kept)
        for refused in written.extras:
            if refused is not None:
                raise refused
        stored: Counter[str] = Counter()
        repeated: Counter[str] = Counter()
        for item, stream_id, at in zip(
            batch.entries, written.ids, batch.entry_results, strict=True
        ):
            if isinstance(stream_id, Exception):
                continue
            if stream_id:
                stored[item.cls] += 1
            else:
                repeated[item.cls] += 1
                batch.results[at] = batch.results[at]._replace(duplicate=True)
        for cls, count in stored.items():
            self.metrics.ingested.labels(cls, source).inc(count)
        for cls, count in repeated.items():
            self.metrics.deduplicated.labels(cls, source).inc(count)
            log.info("repeated event ids not written again", **{"class": cls}, count=count)
        self._count(batch)
        return written.refusals()

    def _count(self, batch: _Batch) -> None:
        for reason, count in batch.reasons.items():
            self.metrics.rejected.labels(reason).inc(count)


@dataclass(slots=True)
class _Batch:
    """Everything one ingest call writes, in one round trip."""

    ingest_ts: float  # one read of the clock: the events of one call arrived together
    id_prefix: str = field(default_factory=event_id_prefix)  # and their ids share a millisecond
    entries: list[Outgoing] = field(default_factory=list)
    entry_results: list[int] = field(default_factory=list)  # each entry's place in `results`
    kept: list[tuple[str, Fields]] = field(default_factory=list)
    results: list[Accepted] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    # MQTT: per entry its topic, payload, place in its message and message number, so an
    # event Redis refuses can be kept aside and its message still acknowledged
    origins: list[tuple[str, Any, int, int]] | None = None
    message: int = 0

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
