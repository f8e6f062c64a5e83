"""Test-only actors: they record what they handled in `PROBES`, keyed by their `name` option.

Referenced from a test's YAML as `actors_for_tests:Recorder` (pytest puts tests/ on sys.path, so
the service's `importlib.import_module` finds this module and shares its globals with the tests).

Behaviour is steered per probe (`probe(name).gate`) and per event (payload fields):
- every handler waits on its probe's `gate`, which is open unless a test closes it;
- an event whose payload has a string `fail` makes the handler raise `HandlerFailed(fail)`,
  after it emitted (so a failed handler's emits can be seen to be dropped);
- the `emit_to` option lists targets (class names or topics) each handled event is emitted to;
- the `yields` option makes a handler give the loop that many turns while it "works", so that
  handlers that are allowed to overlap do overlap.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.api import Actor, Context
from actors.music import LakeArchiver

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.streams.envelope import Envelope


class HandlerFailed(Exception):
    """What a test actor raises when an event asks it to fail."""


@dataclass
class Probe:
    """What one named test actor saw, and the gate its handlers wait on."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: list[Envelope] = field(default_factory=list)
    handled: list[Envelope] = field(default_factory=list)
    batches: list[list[Envelope]] = field(default_factory=list)
    batch_times: list[float] = field(default_factory=list)  # time.monotonic() at batch start
    active: int = 0
    max_active: int = 0
    active_keys: Counter[str | None] = field(default_factory=Counter)
    max_per_key: int = 0

    def __post_init__(self) -> None:
        self.gate.set()

    def handled_ids(self) -> list[str]:
        return [event.id for event in self.handled]


PROBES: dict[str, Probe] = {}


def probe(name: str) -> Probe:
    """The probe of the actor named `name`, created on first use."""
    found = PROBES.get(name)
    if found is None:
        found = PROBES[name] = Probe()
    return found


def reset() -> None:
    """Forget every probe (each test starts from nothing)."""
    PROBES.clear()


class Recorder(Actor):
    """Records each event, optionally blocks on a gate, fails on demand and emits.

    Options: `name` (required), `emit_to` (list of targets), `yields` (loop turns per event).
    """

    def __init__(
        self, *, name: str, emit_to: Sequence[str] = (), yields: int = 0, **options: Any
    ) -> None:
        super().__init__(name=name, emit_to=list(emit_to), yields=yields, **options)
        self.name = name
        self.emit_to = list(emit_to)
        self.yields = yields

    async def handle(self, event: Envelope, ctx: Context) -> None:
        seen = probe(self.name)
        seen.started.append(event)
        seen.active += 1
        seen.max_active = max(seen.max_active, seen.active)
        seen.active_keys[event.key] += 1
        seen.max_per_key = max(seen.max_per_key, seen.active_keys[event.key])
        try:
            await seen.gate.wait()
            for _ in range(self.yields):
                await asyncio.sleep(0)
            self._act(event, ctx)
            seen.handled.append(event)
        finally:
            seen.active -= 1
            seen.active_keys[event.key] -= 1

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        seen = probe(self.name)
        seen.batches.append(list(events))
        seen.batch_times.append(time.monotonic())
        seen.started.extend(events)
        seen.active += 1
        seen.max_active = max(seen.max_active, seen.active)
        try:
            await seen.gate.wait()
            for event in events:
                self._act(event, ctx)
            seen.handled.extend(events)
        finally:
            seen.active -= 1

    def _act(self, event: Envelope, ctx: Context) -> None:
        """Emit to every `emit_to` target, then fail if the payload asks for it."""
        for target in self.emit_to:
            ctx.emit(target, event.payload)
        failure = event.payload.get("fail") if isinstance(event.payload, dict) else None
        if isinstance(failure, str):
            raise HandlerFailed(failure)


# --- added for the delivery, fault and CLI tests (tests/test_delivery.py and friends) ---


@dataclass
class Runs:
    """Per-probe extras of `Steered`: wall-clock start of every run, emits, start() calls."""

    runs: list[tuple[str, int, float]] = field(default_factory=list)  # (event id, attempt, wall)
    emitted: list[tuple[str, float]] = field(default_factory=list)  # (child id, wall before emit)
    starts: int = 0
    broken: bool = False  # while True, every handler run raises HandlerFailed("broken")

    def runs_of(self, event_id: str) -> list[tuple[str, int, float]]:
        return [run for run in self.runs if run[0] == event_id]


RUNS: dict[str, Runs] = {}


def runs(name: str) -> Runs:
    """The run records of the `Steered` actor named `name`, created on first use."""
    found = RUNS.get(name)
    if found is None:
        found = RUNS[name] = Runs()
    return found


class NeverSet(Exception):
    """Raised if the event a hanging handler waits on is ever set (it is not)."""


class Steered(Recorder):
    """A Recorder with more failure modes, for the delivery tests.

    Options on top of Recorder's:
    - `fail_first`: the first N runs of each event id raise `HandlerFailed("fail_first")`;
    - `fail_starts`: the first N calls of `start()` (per name) raise `RuntimeError`;
    - `emit_delay_s`: every `emit_to` emit is a timed wait of that many seconds;
    - `sleep_s`: each run sleeps that long before it records the event as handled.
    Per event: a payload with `"hang": true` waits on an event that is never set.
    Per probe: `runs(name).broken = True` makes every run fail until it is cleared.
    """

    def __init__(
        self,
        *,
        name: str,
        fail_first: int = 0,
        fail_starts: int = 0,
        emit_delay_s: float | None = None,
        sleep_s: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(name=name, **options)
        self.fail_first = fail_first
        self.fail_starts = fail_starts
        self.emit_delay_s = emit_delay_s
        self.sleep_s = sleep_s

    async def start(self) -> None:
        record = runs(self.name)
        record.starts += 1
        if record.starts <= self.fail_starts:
            raise RuntimeError(f"start() failure {record.starts} of {self.fail_starts}")

    async def handle(self, event: Envelope, ctx: Context) -> None:
        record = runs(self.name)
        earlier = len(record.runs_of(event.id))
        record.runs.append((event.id, event.attempt, time.time()))
        if isinstance(event.payload, dict) and event.payload.get("hang") is True:
            await asyncio.Event().wait()
            raise NeverSet(event.id)
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        if record.broken:
            raise HandlerFailed("broken")
        if earlier < self.fail_first:
            raise HandlerFailed(f"fail_first: run {earlier + 1} of {self.fail_first}")
        await super().handle(event, ctx)

    def _act(self, event: Envelope, ctx: Context) -> None:
        if self.emit_delay_s is None:
            super()._act(event, ctx)
            return
        for target in self.emit_to:
            emitted_at = time.time()
            child = ctx.emit(target, event.payload, delay_s=self.emit_delay_s)
            runs(self.name).emitted.append((child, emitted_at))


def reset_runs() -> None:
    """Forget every `Steered` record (the `probes` fixture only clears PROBES)."""
    RUNS.clear()


class SlowForward(Actor):
    """Like `actors.builtin:Forward` (appends each event's id and payload to `stream`), after
    sleeping `sleep_s`: for service processes, whose handled events must be visible in Redis.
    """

    def __init__(self, *, stream: str, sleep_s: float = 0.0, **options: Any) -> None:
        super().__init__(stream=stream, sleep_s=sleep_s, **options)
        self.stream = stream
        self.sleep_s = sleep_s

    async def handle(self, event: Envelope, ctx: Context) -> None:
        if self.sleep_s:
            await asyncio.sleep(self.sleep_s)
        ctx.append(self.stream, {"id": event.id, "attempt": event.attempt})


class Appender(Actor):
    """Appends each event's id and payload `value`, whatever it is, to `test:appended`."""

    async def handle(self, event: Envelope, ctx: Context) -> None:
        ctx.append("test:appended", {"id": event.id, "value": event.payload.get("value")})


# --- added for the music lake tests (tests/test_music_lake.py) ---


class CrashingArchiver(LakeArchiver):
    """The lake archiver, but the first run to publish a segment SIGKILLs its own process
    right after, before the batch is acknowledged. Option `marker`: a file that says the crash
    happened, so the restarted service archives normally."""

    def __init__(self, *, marker: str, **options: Any) -> None:
        super().__init__(**options)
        self.marker = Path(marker)

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        await super().handle_batch(events, ctx)
        if not self.marker.exists():
            self.marker.write_text(f"{len(events)}\n")
            os.kill(os.getpid(), signal.SIGKILL)
