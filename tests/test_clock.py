"""Timed waits: set, timed out, and cancelled, including the cancel that lands as the wait ends."""

from __future__ import annotations

import asyncio

import pytest

from router.clock import wait_set


async def test_wait_set_says_whether_the_event_was_set_in_time() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 10) is True


async def test_a_cancel_arriving_as_the_event_is_set_still_cancels() -> None:
    """asyncio.wait_for on Python 3.11 returns normally here, and the task runs on: a pool
    whose TaskGroup cancelled its helpers once then never finished stopping."""
    event, entered = asyncio.Event(), asyncio.Event()
    ran_on = False

    async def waiter() -> None:
        nonlocal ran_on
        entered.set()
        await wait_set(event, 10)
        ran_on = True

    task = asyncio.create_task(waiter())
    await entered.wait()  # we run again once the waiter sits in its wait
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not ran_on
