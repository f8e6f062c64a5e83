"""Test helpers shipped with the package, for Switchyard's own tests and for users' actors.

- `FakeClock`: time that moves only when told to.
- `fake_transport()`: the real Redis transport on fakeredis, so the engine's promises (pending
  entries, acks, the delay queue, dead letters, de-duplication) hold without a server.
- `FakeContext` and `event()`: an actor's handler called directly, its emits, appends and
  failures recorded, with the same checks the runtime makes.

fakeredis is a test dependency (`pip install switchyard[testing]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fakeredis
import structlog

from router.runtime.context import check_fields
from router.streams.envelope import Envelope, child_event_id, new_event_id
from router.streams.keys import workload_of
from router.streams.records import update as record_update
from router.streams.redis import RedisTransport

if TYPE_CHECKING:
    from router.notify.alert import Alert
    from router.notify.device import Device
    from router.runtime.actor import StreamFields


class FakeClock:
    """A `router.clock.Clock` for tests: `advance()` moves both clocks, nothing else does."""

    def __init__(self, wall: float = 1_800_000_000.0, monotonic: float = 1_000.0) -> None:
        self._wall = wall
        self._monotonic = monotonic

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._wall += seconds
        self._monotonic += seconds


def fake_transport(
    group: str = "switchyard",
    consumer: str = "test",
    *,
    dedup_window_s: float = 600.0,
    server: fakeredis.FakeServer | None = None,
) -> RedisTransport:
    """Switchyard's Redis transport on a fresh fakeredis server, or on `server` (one server,
    several transports: several processes on one Redis).

    The same code runs as against Redis, with one difference: fakeredis's Lua has no
    `cmsgpack`, which the enqueue script uses to read a batch from one argument, so batches go
    to it as plain arguments, three per event (real-Redis tests cover the packed form).
    """
    redis = fakeredis.FakeAsyncRedis(server=server or fakeredis.FakeServer())
    return RedisTransport(
        redis, group, consumer, dedup_window_s=dedup_window_s, packed_batches=False
    )


def event(
    payload: Any,
    *,
    cls: str = "test",
    key: str | None = None,
    topic: str = "",
    event_id: str | None = None,
    lane: str = "high",
    attempt: int = 0,
) -> Envelope:
    """An envelope as a handler would receive it."""
    return Envelope(
        id=event_id or new_event_id(),
        cls=cls,
        lane=lane,
        payload=payload,
        key=key,
        topic=topic,
        attempt=attempt,
    )


@dataclass(frozen=True, slots=True)
class Emitted:
    """One `ctx.emit` a handler made."""

    id: str
    target: str
    payload: Any
    key: str | None
    parent: Envelope
    delay_s: float | None


@dataclass
class FakeContext:
    """An `actors.api.Context` that records what a handler asked for.

    `event` is the handled event (for a batch, its first member): what emits derive their ids
    and keys from unless `parent=` says otherwise. Appends are checked as the runtime checks
    them, so a handler that would fail there fails here.
    """

    event: Envelope = field(default_factory=lambda: event({}))
    cls: str = "test"
    emitted: list[Emitted] = field(default_factory=list)
    appended: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)
    log: Any = field(default_factory=lambda: structlog.get_logger("switchyard.test"))
    taken_over: set[str] = field(default_factory=set)  # ids `redelivered()` says yes to
    devices: dict[str, Device] = field(default_factory=dict)  # the registry `device()` reads
    notified: list[Alert] = field(default_factory=list)  # every alert `notify()` was given
    records: dict[str, dict[str, str]] = field(default_factory=dict)  # `update()` writes here

    def update(
        self,
        name: str,
        fields: StreamFields,
        *,
        keep_s: float = 7 * 86400,
        parent: Envelope | None = None,
    ) -> None:
        """As the runtime: checked, then stored as text (as `record()` reads it back)."""
        checked = check_fields(f"record {name}", fields)
        record_update(workload_of(self.cls), name, checked, keep_s)
        self.records.setdefault(name, {}).update({k: _text(v) for k, v in checked.items()})

    async def record(self, name: str) -> dict[str, str]:
        return dict(self.records.get(name, {}))

    def emit(
        self,
        target: str,
        payload: Any,
        *,
        key: str | None = None,
        parent: Envelope | None = None,
        delay_s: float | None = None,
    ) -> str:
        parent = parent or self.event
        index = sum(1 for e in self.emitted if e.parent.id == parent.id)
        child = child_event_id(parent.id, index)
        chosen = key if key is not None else parent.key
        self.emitted.append(Emitted(child, target, payload, chosen, parent, delay_s))
        return child

    def append(self, stream: str, fields: StreamFields, *, parent: Envelope | None = None) -> None:
        self.appended.append((stream, check_fields(stream, fields)))

    def fail(self, event: Envelope, error: BaseException) -> None:
        self.failed[event.id] = error

    def redelivered(self, event: Envelope) -> bool:
        return event.id in self.taken_over

    async def device(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    async def notify(self, alert: Alert) -> None:
        self.notified.append(alert)

    def appended_to(self, stream: str) -> list[dict[str, Any]]:
        """The fields of every entry appended to `stream`, in order."""
        return [fields for name, fields in self.appended if name == stream]


def _text(value: str | bytes | int | float) -> str:
    """A field as Redis gives it back: text (a float as Redis writes it, e.g. `1.5`)."""
    return value.decode() if isinstance(value, bytes) else str(value)
