"""The supervisor restarts a failing task with backoff and says why: in full the first time,
in one line while it keeps failing the same way, in full again once it has run for a while."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from structlog.testing import capture_logs

from router.service import supervisor as supervisor_module
from router.service.supervisor import Supervisor

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    import pytest


class WrongType(Exception):
    """An error a task keeps meeting until someone fixes what causes it."""


async def failures_said(errors: list[Exception]) -> list[MutableMapping[str, Any]]:
    """Run a task that raises each of `errors` in turn, then ends; what the supervisor said."""
    remaining = list(errors)
    ended = asyncio.Event()

    async def run() -> None:
        if remaining:
            raise remaining.pop(0)
        ended.set()

    supervisor = Supervisor(initial_s=0.001, maximum_s=0.01)
    await supervisor.start()
    restarts: list[str] = []
    with capture_logs() as logs:
        supervisor.spawn("pool:orders", run, restarted=lambda: restarts.append("again"))
        await asyncio.wait_for(ended.wait(), timeout=10)
    await supervisor.close()
    assert len(restarts) == len(errors)
    return [entry for entry in logs if entry.get("task") == "pool:orders"]


async def test_the_same_failure_again_is_said_in_one_line_and_a_new_one_in_full() -> None:
    wrong_type = WrongType("WRONGTYPE Operation against a key holding the wrong kind")
    said = await failures_said([wrong_type, wrong_type, wrong_type, KeyError("another")])
    assert [entry["event"] for entry in said] == [
        "task failed, restarting",
        "task failed again, restarting",
        "task failed again, restarting",
        "task failed, restarting",
    ]
    assert [entry.get("exc_info", False) for entry in said] == [True, False, False, True]
    assert [entry["failures"] for entry in said] == [1, 2, 3, 4]  # the backoff keeps growing
    assert "WRONGTYPE" in said[1]["error"]


async def test_a_task_that_ran_for_a_while_before_failing_starts_its_backoff_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "HEALTHY_S", 0.0)  # every run counts as a long one
    said = await failures_said([ValueError("once"), ValueError("once")])
    assert [entry["failures"] for entry in said] == [1, 1]
    assert [entry.get("exc_info", False) for entry in said] == [True, True]
