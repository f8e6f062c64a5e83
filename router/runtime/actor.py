"""The actor API: what a domain actor implements and the context it is handed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from router.errors import PermanentFailure
from router.streams.envelope import Envelope

if TYPE_CHECKING:
    import structlog

    from router.notify.alert import Alert
    from router.notify.device import Device

__all__ = ["Actor", "Context", "Envelope", "PermanentFailure", "StreamFields"]

StreamFields = Mapping[str, str | bytes | int | float]


class Context(Protocol):
    """What a handler may do besides computing: hand work on, tap a stream, log.

    Writes are collected and made durable before the handled event is acknowledged, so a
    crash between the two repeats the handler rather than losing its output.
    """

    @property
    def cls(self) -> str:
        """The event class being handled."""
        ...

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """A logger bound to this class (and, per event, to the event id)."""
        ...

    def emit(
        self,
        target: str,
        payload: Any,
        *,
        key: str | None = None,
        parent: Envelope | None = None,
        delay_s: float | None = None,
    ) -> str:
        """Hand a new event to a class (by name) or to a topic (routed like an MQTT message).

        `parent` is the event this one follows from: the handled event by default; batch
        handlers pass the batch member they are emitting for. The key defaults to the parent's
        key. `delay_s` holds the event in the target's durable delay queue first (a timed
        wait). Returns the new event's id, derived from the parent's id, so a repeated handler
        emits the same ids (and the repeat is de-duplicated on arrival).
        """
        ...

    def append(self, stream: str, fields: StreamFields, *, parent: Envelope | None = None) -> None:
        """Add an entry to any Redis stream (an audit tap or a durable log).

        Field values are str, bytes, int or float (not bool): anything else raises TypeError
        here, in the handler. In a batch, `parent` ties the entry to one member, so it is
        dropped if that member fails; without it, the entry belongs to the whole batch.
        """
        ...

    def update(
        self,
        name: str,
        fields: StreamFields,
        *,
        keep_s: float = 7 * 86400,
        parent: Envelope | None = None,
    ) -> None:
        """Set `fields` on this workload's record `name` (a patient's visit, say), written
        with the handler's other outputs before the event is acknowledged; the record is
        then kept `keep_s` (renewed by every update). Fields as for `append`; at most 256.
        Setting a field is idempotent, so a repeated handler does no harm; a field holding a
        list is not: give each item a field of its own (`reaction.<event id>`)."""
        ...

    async def record(self, name: str) -> dict[str, str]:
        """This workload's record `name`, as written so far (empty: none). Updates a handler
        made are not in it until its event is acknowledged: in stream mode, the next event
        of the same key may start before that."""
        ...

    async def device(self, device_id: str) -> Device | None:
        """The device `device_id` of this class's workload, as registered (owner, channels,
        settings such as a motion threshold); None when it is not registered."""
        ...

    async def notify(self, alert: Alert) -> None:
        """Deliver `alert` to its device's owner on every channel (signed webhook, MQTT
        back-channel), and return once each has it. Raises when one has not: the handler
        fails, and the event is retried (the receiver is down) or dead-lettered (the device
        is not registered, the receiver refuses the alert)."""
        ...

    def redelivered(self, event: Envelope) -> bool:
        """Whether another run may have handled this event already: it was taken over from
        a consumer that died or stalled, maybe after its handler finished. (A retry, after a
        run that failed, shows as `event.attempt > 0`.) A handler whose effect lives outside
        Switchyard's outputs (a file, an upload) checks for it before doing it again."""
        ...

    def fail(self, event: Envelope, error: BaseException) -> None:
        """In `handle_batch`: this member failed, the rest of the batch did not.

        It is retried on its own (a `PermanentFailure` goes straight to the dead letters), and
        the outputs emitted or appended for it are dropped.
        """
        ...


class Actor:
    """Base class of actors: one instance per class pool, built with the class's `options`.

    Implement `handle` (stream and queue modes) or `handle_batch` (batch mode). Raising marks
    the event (or the whole batch) as failed: it is retried, then kept in the class's
    dead-letter stream. Raise `PermanentFailure` for an event that can never succeed (invalid
    data): it goes to the dead letters at once. A batch handler fails one member with
    `ctx.fail(event, error)`. An actor with only `handle` in batch mode gets each member
    handled on its own, and a member that raises fails alone.
    """

    def __init__(self, **options: Any) -> None:
        self.options = options

    async def start(self) -> None:
        """Called once before the first event; open connections or load state here."""

    async def stop(self) -> None:
        """Called once after the last event, during drain."""

    async def handle(self, event: Envelope, ctx: Context) -> None:
        """Handle one event."""
        raise NotImplementedError(f"{type(self).__name__} does not implement handle()")

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        """Handle a batch. Not overridden, the pool hands each member to `handle` in order,
        each with a context of its own, and a member that raises fails alone."""
        raise NotImplementedError(f"{type(self).__name__} does not implement handle_batch()")

    @classmethod
    def handles_batches(cls) -> bool:
        """Whether this actor implements `handle_batch` itself."""
        return cls.handle_batch is not Actor.handle_batch
