"""Ownership of ordered partitions, leases and take-overs, on fakeredis: fast and exact.

The real-server and cluster behaviour (processes killed, joining, leaving) is in
tests/test_scale_out.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import fakeredis
import pytest

from router.service.membership import Membership
from router.service.ownership import Ownership, owner
from router.streams import keys
from router.streams.transport import Outgoing
from router.testing import FakeClock, event, fake_transport

if TYPE_CHECKING:
    from router.runtime.pool import Pool
    from router.streams.redis import RedisTransport

TAGS = keys.tags("orders", 8)
LEASE_S = 2.5
HEARTBEAT_S = 0.5


def test_every_process_computes_the_same_owners_and_a_joiner_takes_about_its_share() -> None:
    tags = keys.tags("orders", 600)
    before = {tag: owner(tag, ["host-1-a", "host-2-b"]) for tag in tags}
    assert before == {tag: owner(tag, ["host-2-b", "host-1-a"]) for tag in tags}  # no order
    after = {tag: owner(tag, ["host-1-a", "host-2-b", "host-3-c"]) for tag in tags}
    moved = [tag for tag in tags if before[tag] != after[tag]]
    assert all(after[tag] == "host-3-c" for tag in moved)  # only to the newcomer
    assert 0.25 < len(moved) / len(tags) < 0.42  # about a third, not a reshuffle
    assert owner("orders", []) is None


async def test_a_lease_is_one_consumers_until_dropped_or_expired() -> None:
    server = fakeredis.FakeServer()
    first, second = (fake_transport(consumer=name, server=server) for name in ("a", "b"))
    assert await first.hold_lease("orders#0", 60_000)
    assert not await second.hold_lease("orders#0", 60_000)
    assert await first.hold_lease("orders#0", 60_000)  # renewed
    await second.drop_lease("orders#0")  # not its own: nothing happens
    assert not await second.hold_lease("orders#0", 60_000)
    await first.drop_lease("orders#0")
    assert await second.hold_lease("orders#0", 60_000)
    assert not await first.hold_lease("orders#0", 60_000)  # the old holder cannot renew


async def test_a_take_over_claims_only_the_departed_consumers_entries_oldest_first() -> None:
    server = fakeredis.FakeServer()
    dead, alive, taker = (fake_transport(consumer=c, server=server) for c in ("x", "alive", "me"))
    await dead.ensure_group("orders")
    events = [event({"n": n}, cls="orders") for n in range(6)]
    await dead.publish([Outgoing("orders", e.encode()) for e in events])
    dead_ids = [entry_id for entry_id, _ in await dead.read("orders", 4, 10)]
    await alive.read("orders", 2, 10)
    assert await taker.claim_from("orders", {"x", "alive"}, 10) == []
    claimed = await taker.claim_from("orders", {"alive"}, 10)
    assert [entry_id for entry_id, _, _ in claimed] == dead_ids
    assert {delivered for _, _, delivered in claimed} == {2}
    assert await taker.claim_from("orders", {"alive"}, 10) == []  # now the taker's own


@dataclass
class FakePool:
    """What Ownership asks of a pool: stop(); its task ends when the test says it drained."""

    drained: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True


@dataclass
class Process:
    """One process's Ownership over a shared fake Redis, with the pools it launched."""

    ownership: Ownership
    pools: dict[str, FakePool]
    clock: FakeClock
    redis: Any

    def running(self) -> set[str]:
        return {tag for tag, held in self.ownership.held.items() if not held.task.done()}


async def drained(pool: FakePool) -> None:
    await pool.drained.wait()


def process(server: fakeredis.FakeServer, name: str, tags: list[str] = TAGS) -> Process:
    transport: RedisTransport = fake_transport(consumer=name, server=server)
    clock = FakeClock()
    pools: dict[str, FakePool] = {}

    def launch(tag: str) -> tuple[Pool, asyncio.Task[None]]:
        pool = pools[tag] = FakePool()
        return cast("Pool", pool), asyncio.create_task(drained(pool))

    ownership = Ownership(
        membership=Membership(transport.redis, name, ["high"], LEASE_S, HEARTBEAT_S),
        transport=transport, clock=clock, heartbeat_s=HEARTBEAT_S, drain_timeout_s=5.0,
        ordered={"high": tags}, shared=lambda lane: [], launch=launch,
        retire=lambda tag, pool: None,
    )  # fmt: skip
    return Process(ownership, pools, clock, transport.redis)


async def settle(*processes: Process) -> None:
    """One heartbeat of each, in turn, checking no partition ever runs in two at once."""
    distinct = {id(each): each for each in processes}.values()
    for each in processes:
        await each.ownership.tick()
        await asyncio.sleep(0)  # finished pools' tasks complete
        seen = [tag for other in distinct for tag in other.running()]
        assert len(seen) == len(set(seen)), "a partition ran in two processes at once"


async def test_a_joiner_gets_its_partitions_only_after_the_holder_drained_them() -> None:
    server = fakeredis.FakeServer()
    first = process(server, "host-1-a")
    await settle(first)
    assert first.running() == set(TAGS)
    second = process(server, "host-2-b")
    await settle(second, first)  # the first hands back the second's share, which drains...
    given = {tag for tag in TAGS if owner(tag, ["host-1-a", "host-2-b"]) == "host-2-b"}
    assert given
    assert {tag for tag, pool in first.pools.items() if pool.stopped} == given
    assert second.running() == set()  # ...while it still holds their leases
    await settle(second, first)
    assert second.running() == set()
    for tag in given:
        first.pools[tag].drained.set()
    await settle(first, second)  # the first drops the leases, the second takes them
    assert second.running() == given
    assert first.running() == set(TAGS) - given


async def test_a_process_that_lost_its_lease_stops_reading_and_its_pool() -> None:
    server = fakeredis.FakeServer()
    only = process(server, "host-1-a", ["orders"])
    await settle(only)
    assert only.ownership.leased("orders")
    only.clock.advance(LEASE_S * 0.85)  # no renewal got through for most of the lease
    assert not only.ownership.leased("orders")  # its pool reads nothing more meanwhile
    await only.redis.set(keys.owner("orders"), "host-9-z")  # taken by another
    await only.ownership.tick()
    assert only.pools["orders"].stopped


async def test_leaving_hands_every_partition_back_and_release_frees_them_at_once() -> None:
    server = fakeredis.FakeServer()
    leaver, stayer = process(server, "host-1-a"), process(server, "host-2-b")
    await settle(leaver, stayer, leaver)
    leaver.ownership.leave()
    await settle(leaver)
    assert all(pool.stopped for pool in leaver.pools.values())
    await leaver.ownership.release()
    await settle(stayer)
    assert stayer.running() == set(TAGS)


@pytest.mark.parametrize("members", [["solo"], ["a", "b", "c"]])
def test_an_ordered_partition_always_has_exactly_one_owner(members: list[str]) -> None:
    owners: dict[str, Any] = {tag: owner(tag, members) for tag in TAGS}
    assert set(owners.values()) <= set(members)


async def test_members_that_beat_late_with_this_process_are_not_judged_dead() -> None:
    """A stall that held up every beat (one host's loop, or Redis itself) leaves the members
    live at the late beat after it; a member that stopped while this one beat on time is
    judged dead at once."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    me, other = (Membership(redis, name, ["high"], 1.2, 0.2) for name in ("me", "other"))
    assert (await me.beat())["high"] == {"me"}
    assert (await other.beat())["high"] == {"me", "other"}

    async def beats_aged(ms: dict[str, int]) -> None:
        """Each consumer's last beat, moved `ms` milliseconds into the past."""
        now_s, now_us = await redis.time()
        now_ms = now_s * 1000 + now_us // 1000
        await redis.zadd(keys.lane_members(), {f"high {c}": now_ms - at for c, at in ms.items()})

    await beats_aged({"me": 1500, "other": 1500})  # both stalled 1.5 s, past the timeout
    assert (await me.beat())["high"] == {"me", "other"}
    await beats_aged({"me": 200, "other": 1500})  # this one beat on time; the other did not
    assert (await me.beat())["high"] == {"me"}
    await beats_aged({"me": 200, "other": 1100})  # late, within the timeout: still live
    assert (await me.beat())["high"] == {"me", "other"}
    await me.leave()
    assert (await other.beat())["high"] == {"other"}
    await redis.aclose()
