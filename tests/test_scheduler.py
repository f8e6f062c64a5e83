"""The lane scheduler: priority admission, minimum shares and ageing, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from router.config import LaneConfig
from router.runtime.scheduler import LaneScheduler
from router.testing import FakeClock


def lanes(*specs: tuple[str, float, int | None]) -> list[LaneConfig]:
    return [LaneConfig(name=n, min_share=s, max_wait_ms=w) for n, s, w in specs]


async def settle() -> None:
    """Let every waiter that was granted slots run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_free_capacity_is_granted_at_once_up_to_what_was_asked() -> None:
    scheduler = LaneScheduler(10, lanes(("high", 0, None), ("low", 0, None)), FakeClock())
    assert await scheduler.acquire("low", 4) == 4
    assert await scheduler.acquire("high", 20) == 6
    assert scheduler.free == 0


async def test_high_lane_is_admitted_before_low_when_saturated() -> None:
    scheduler = LaneScheduler(2, lanes(("high", 0, None), ("low", 0, None)), FakeClock())
    assert await scheduler.acquire("low", 2) == 2
    low = asyncio.create_task(scheduler.acquire("low", 1))
    await settle()
    high = asyncio.create_task(scheduler.acquire("high", 1))
    await settle()

    scheduler.release("low", 1)
    await settle()
    assert high.done()
    assert high.result() == 1
    assert not low.done()  # it asked first, but its lane is lower

    scheduler.release("low", 1)
    await settle()
    assert low.result() == 1


async def test_a_lanes_minimum_share_is_kept_for_it_even_while_it_is_quiet() -> None:
    scheduler = LaneScheduler(10, lanes(("high", 0, None), ("low", 0.2, None)), FakeClock())
    assert await scheduler.acquire("high", 10) == 8  # 2 of 10 stay reserved for low
    assert await scheduler.acquire("low", 5) == 2  # at once, despite the busy high lane


async def test_freed_reserved_slots_go_back_to_their_lane_not_to_a_higher_waiter() -> None:
    scheduler = LaneScheduler(10, lanes(("high", 0, None), ("low", 0.2, None)), FakeClock())
    assert await scheduler.acquire("high", 10) == 8
    assert await scheduler.acquire("low", 2) == 2
    high = asyncio.create_task(scheduler.acquire("high", 5))
    low = asyncio.create_task(scheduler.acquire("low", 5))
    await settle()

    scheduler.release("low", 2)
    await settle()
    assert low.done()
    assert low.result() == 2
    assert not high.done()
    high.cancel()


async def test_a_lane_at_its_minimum_share_waits_behind_higher_lanes_again() -> None:
    scheduler = LaneScheduler(10, lanes(("high", 0, None), ("low", 0.2, None)), FakeClock())
    assert await scheduler.acquire("low", 2) == 2
    assert await scheduler.acquire("high", 8) == 8
    low = asyncio.create_task(scheduler.acquire("low", 1))
    high = asyncio.create_task(scheduler.acquire("high", 1))
    await settle()

    scheduler.release("high", 1)
    await settle()
    assert high.done()
    assert not low.done()
    low.cancel()


async def test_a_starving_waiter_ages_ahead_of_every_lane_after_max_wait() -> None:
    clock = FakeClock()
    scheduler = LaneScheduler(1, lanes(("high", 0, None), ("low", 0, 500)), clock)
    assert await scheduler.acquire("high", 1) == 1
    low = asyncio.create_task(scheduler.acquire("low", 1))
    await settle()
    high = asyncio.create_task(scheduler.acquire("high", 1))
    await settle()

    clock.advance(0.6)  # low has now waited past its max_wait_ms
    scheduler.release("high", 1)
    await settle()
    assert low.done()
    assert not high.done()
    high.cancel()


async def test_a_cancelled_waiter_gives_nothing_away() -> None:
    scheduler = LaneScheduler(1, lanes(("high", 0, None), ("low", 0, None)), FakeClock())
    assert await scheduler.acquire("high", 1) == 1
    gone = asyncio.create_task(scheduler.acquire("low", 1))
    await settle()
    gone.cancel()
    await settle()

    scheduler.release("high", 1)
    assert scheduler.free == 1
    assert await scheduler.acquire("high", 1) == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LaneScheduler(0, lanes(("high", 0, None)), FakeClock())
