"""Stopping tasks for sure: a cancel repeated until the task is done, and one way to race a
wait against a stop.

On Python 3.11 a cancel can be lost: when it lands as an inner `asyncio.wait_for` or timeout
completes (redis-py reads under both), the task carries on as if nothing happened, and a loop
that lost its cancel runs for ever. A trio cancel scope is level-triggered: once cancelled, it
stays cancelled. `cancel_and_wait` gives asyncio tasks the same, and every place that stops a
task or races one against a stop goes through here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable

T = TypeVar("T")
RECANCEL_EVERY_S = 0.1  # how soon a lost cancel is repeated


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and wait until every one is done, cancelling again any that lost it."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=RECANCEL_EVERY_S)


async def until_stopped(waiting: Awaitable[T], stop: asyncio.Event) -> T | None:
    """The result of `waiting`, or None when `stop` is set first.

    The loser is cancelled and awaited, so nothing outlives the call, even when the caller
    itself is cancelled.
    """
    task = asyncio.ensure_future(waiting)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        await asyncio.shield(cancel_and_wait(task, stopper))
        raise
    await cancel_and_wait(stopper)
    if task.done():
        return task.result()
    await cancel_and_wait(task)
    return None
