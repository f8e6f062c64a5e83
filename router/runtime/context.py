"""The handler context: what an actor may ask for besides computing, collected for the pool.

Emits and appends are only recorded here; the pool writes them to Redis before it
acknowledges the handled entries, so a crash in between repeats the handler instead of
losing its output. Emitted ids derive from the parent's id and are de-duplicated on arrival,
so the repeat does not double anything downstream.

Everything an output could fail on is checked here, as the handler asks for it (an emit is
encoded, an append's fields are checked): a bad value fails its own event, in its handler,
and never the write that carries its neighbours' outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.errors import UnknownTarget
from router.streams import records
from router.streams.envelope import Envelope, child_event_id
from router.streams.keys import workload_of
from router.streams.transport import Outgoing

if TYPE_CHECKING:
    import structlog

    from router.notify.alert import Alert
    from router.notify.device import Device
    from router.notify.notifier import Notifier
    from router.routing.addressing import Addresser
    from router.runtime.actor import StreamFields
    from router.streams.records import Records
    from router.streams.transport import Extra


@dataclass(slots=True)
class Outputs:
    """What a handler asked to write (emits; stream appends and record updates), each output
    with the id of the event it is for (None: the whole batch); made durable before its
    events are acknowledged."""

    emits: list[tuple[str, Outgoing]] = field(default_factory=list)
    writes: list[tuple[str | None, Extra]] = field(default_factory=list)
    failures: dict[str, BaseException] = field(default_factory=dict)  # event id -> error

    def __bool__(self) -> bool:
        return bool(self.emits or self.writes)

    def without(self, event_ids: set[str]) -> Outputs:
        """These outputs less those for `event_ids` (events that failed)."""
        return Outputs(
            [(parent, emit) for parent, emit in self.emits if parent not in event_ids],
            [(parent, write) for parent, write in self.writes if parent not in event_ids],
        )


NO_OUTPUTS = Outputs()  # what a handler that wrote nothing leaves; never appended to


class EventContext:
    """The `actors.api.Context` handed to a handler for one event or one batch.

    Made for every event, so it holds plain slots and builds what most handlers never use
    (a bound logger, the emit records) on first use.
    """

    __slots__ = (
        "_addresser",
        "_base_log",
        "_batch",
        "_children",
        "_cls",
        "_log",
        "_notifier",
        "_outputs",
        "_parent",
        "_records",
        "_redelivered",
    )

    def __init__(
        self,
        cls: str,
        parent: Envelope,
        addresser: Addresser,
        log: structlog.typing.FilteringBoundLogger,
        *,
        batch: bool = False,
        redelivered: frozenset[str] = frozenset(),
        notifier: Notifier | None = None,
        records: Records | None = None,
    ) -> None:
        self._cls = cls
        self._redelivered = redelivered
        self._notifier = notifier
        self._records = records
        self._parent = parent
        self._addresser = addresser
        self._base_log = log
        self._log: structlog.typing.FilteringBoundLogger | None = None
        self._batch = batch
        self._children: dict[str, int] | None = None
        self._outputs: Outputs | None = None

    @property
    def outputs(self) -> Outputs:
        """What the handler asked to write so far."""
        return NO_OUTPUTS if self._outputs is None else self._outputs

    def _written(self) -> Outputs:
        if self._outputs is None:
            self._outputs = Outputs()
        return self._outputs

    def member(self, event: Envelope) -> EventContext:
        """A context for one event of this batch, writing into the batch's outputs."""
        child = EventContext(
            self._cls, event, self._addresser, self._base_log,
            redelivered=self._redelivered, notifier=self._notifier, records=self._records,
        )  # fmt: skip
        child._outputs = self._written()
        child._children = self._children = self._children or {}
        return child

    @property
    def cls(self) -> str:
        return self._cls

    def redelivered(self, event: Envelope) -> bool:
        return event.id in self._redelivered

    async def device(self, device_id: str) -> Device | None:
        return await self._notifying().device(self._cls, device_id)

    async def notify(self, alert: Alert) -> None:
        await self._notifying().notify(self._cls, alert)

    def _notifying(self) -> Notifier:
        if self._notifier is None:
            raise RuntimeError("this process has no notifier (it was started without Redis)")
        return self._notifier

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """Bound to the class and, for one event, its id; bound on first use (most handlers
        never log, and binding costs on every event)."""
        if self._log is None:
            self._log = (
                self._base_log if self._batch else self._base_log.bind(event_id=self._parent.id)
            )
        return self._log

    def emit(
        self,
        target: str,
        payload: Any,
        *,
        key: str | None = None,
        parent: Envelope | None = None,
        delay_s: float | None = None,
    ) -> str:
        parent = parent or self._parent
        children = self._children = self._children or {}
        index = children[parent.id] = children.get(parent.id, -1) + 1
        event_id = child_event_id(parent.id, index)
        source = f"emit:{self._cls}"
        if target in self._addresser.config.classes:
            envelope = self._addresser.for_class(
                target, payload, key=key if key is not None else parent.key,
                source=source, event_id=event_id, source_ts=parent.source_ts,
            )  # fmt: skip
        else:
            routed = self._addresser.for_topic(target, payload, source=source, event_id=event_id)
            if routed is None:
                raise UnknownTarget(target)
            envelope = routed
        due = None
        if delay_s:
            # A timed wait is not queueing delay: its latency is measured from its release.
            due = envelope.ingest_ts + delay_s
            envelope = envelope._replace(ingest_ts=due)
        tag = self._addresser.partition(envelope)
        outgoing = Outgoing(envelope.cls, envelope.encode(), dedup_id=envelope.id, due=due, tag=tag)
        self._written().emits.append((parent.id, outgoing))
        return envelope.id

    def append(self, stream: str, fields: StreamFields, *, parent: Envelope | None = None) -> None:
        checked = check_fields(stream, fields)
        self._written().writes.append((self._owner(parent), (stream, checked)))

    def update(
        self,
        name: str,
        fields: StreamFields,
        *,
        keep_s: float = records.DEFAULT_KEEP_S,
        parent: Envelope | None = None,
    ) -> None:
        checked = check_fields(f"record {name}", fields)
        try:
            change = records.update(workload_of(self._cls), name, checked, keep_s)
        except ValueError as exc:
            raise TypeError(str(exc)) from None
        self._written().writes.append((self._owner(parent), change))

    async def record(self, name: str) -> dict[str, str]:
        if self._records is None:
            raise RuntimeError("this process keeps no records (it was started without Redis)")
        return await self._records.get(name)

    def _owner(self, parent: Envelope | None) -> str | None:
        """The event an output is for: `parent`, else the handled event (a batch: None)."""
        return parent.id if parent is not None else (None if self._batch else self._parent.id)

    def fail(self, event: Envelope, error: BaseException) -> None:
        self._written().failures[event.id] = error


def check_fields(stream: str, fields: StreamFields) -> dict[str, str | bytes | int | float]:
    """A copy of an append's fields, or TypeError naming the first field Redis cannot store."""
    if not isinstance(stream, str) or not stream:
        raise TypeError(f"a stream name must be a non-empty str, not {stream!r}")
    checked: dict[str, str | bytes | int | float] = {}
    for name, value in fields.items():
        if not isinstance(name, str):
            raise TypeError(f"append to {stream}: field names are str, not {name!r}")
        if isinstance(value, bool) or not isinstance(value, (str, bytes, int, float)):
            raise TypeError(
                f"append to {stream}: field {name!r} is a {type(value).__name__}; "
                "fields are str, bytes, int or float"
            )
        checked[name] = value
    if not checked:
        raise TypeError(f"append to {stream}: an entry needs at least one field")
    return checked
