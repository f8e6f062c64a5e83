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
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.api import Actor, Context
from router.envelope import Envelope


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
