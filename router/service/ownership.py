"""Ownership: which process consumes each ordered partition, and who takes over the dead's work.

An ordered (stream-mode) partition has one consumer at a time across every process of its
lane, so a key's events are handled one at a time and in order. Each heartbeat:

- Every process computes the same owner for each partition from the lane's live members,
  by rendezvous hashing: a member joining or leaving moves only the partitions it gains or
  held (about 1/N of them), and nobody has to agree on anything but the member set.
- The owner takes the partition's lease (a key with a short expiry, holding the owner's
  unique consumer name as fencing token) and only then starts the pool, which first takes
  every other consumer's pending entries, oldest first. A previous owner keeps renewing its
  lease until its pool has drained, so the new one never starts beside it; a frozen one
  loses it after `member_timeout_s`, and its pool stops reading as soon as its own lease
  is no longer sure (`leased`), before the others can take it.
- Unordered pools share their consumer group; when a member drops out of the live set, the
  survivors take over its pending entries at once instead of after `claim_idle_ms`.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from router.clock import wait_set
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from router.clock import Clock
    from router.runtime.pool import Pool
    from router.service.membership import Membership
    from router.streams.transport import Transport

log = structlog.get_logger("switchyard.ownership")

LEASE_MARGIN = 0.8  # a pool reads only within this share of its lease's life, by its own clock
RENEWALS_PER_LEASE = 3  # a lease is renewed this many times in its life


def owner(tag: str, members: Collection[str]) -> str | None:
    """The member that owns `tag`: the highest hash of (member, tag); None with no members."""
    return max(members, key=lambda member: _weight(member, tag), default=None)


def _weight(member: str, tag: str) -> bytes:
    return hashlib.blake2b(f"{member}\n{tag}".encode(), digest_size=8).digest()


class Launch(Protocol):
    def __call__(self, tag: str) -> tuple[Pool, asyncio.Task[None]]:
        """Build and start the pool of an ordered partition this process now owns."""


@dataclass(slots=True)
class Held:
    """An ordered partition whose lease this process holds, and the pool running it."""

    pool: Pool
    task: asyncio.Task[None]
    renewed: float  # monotonic time the last successful renewal was sent
    handing_back_since: float | None = None


class Ownership:
    """Keeps this process's heartbeat, its ordered partitions' leases and pools, and the
    take-over of departed members' entries."""

    def __init__(
        self,
        *,
        membership: Membership,
        transport: Transport,
        clock: Clock,
        heartbeat_s: float,
        drain_timeout_s: float,
        ordered: Mapping[str, Sequence[str]],
        shared: Callable[[str], Sequence[Pool]],
        launch: Launch,
        retire: Callable[[str, Pool], None],
    ) -> None:
        self.membership = membership
        self.transport = transport
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.drain_timeout_s = drain_timeout_s
        self.ordered = ordered  # lane -> the ordered partitions this process may run
        self.shared = shared  # lane -> this process's unordered pools
        self.launch = launch
        self.retire = retire  # called as an ordered partition's pool ends here
        self.lease_ms = membership.timeout_ms
        self.me = membership.consumer
        self.live: dict[str, frozenset[str]] = {}  # lane -> live members, as last seen
        self.held: dict[str, Held] = {}
        self.leaving = False
        self._seen: dict[str, frozenset[str]] = {}
        self._wake = asyncio.Event()
        self._redis_ok = True

    # --- what the pools ask ---

    def keeper(self, lane: str, tag: str) -> bool:
        """Whether this process keeps a shared partition's timers (its delay queue): one
        process per partition polls it, the rest act only on what they schedule."""
        chosen = owner(tag, self.live.get(lane, ()))
        return chosen is None or chosen == self.me

    def leased(self, tag: str) -> bool:
        """Whether this process surely still holds an ordered partition's lease."""
        held = self.held.get(tag)
        if held is None:
            return False
        return self.clock.monotonic() - held.renewed < self.lease_ms / 1000 * LEASE_MARGIN

    # --- the loop ---

    async def join(self) -> None:
        """The first heartbeat, before any pool reads: the others see this process at once."""
        self.live = await self.membership.beat()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
                self._redis_ok = True
            except UNAVAILABLE as exc:
                if self._redis_ok:
                    log.warning("redis unavailable, heartbeat missed", error=str(exc))
                self._redis_ok = False
            self._wake.clear()
            await wait_set(self._wake, self.heartbeat_s)

    async def tick(self) -> None:
        """One heartbeat: beat, keep or hand back each ordered partition, take over the dead's."""
        self.live = await self.membership.beat()
        for lane, tags in self.ordered.items():
            members = self.live.get(lane, frozenset())
            for tag in tags:
                await self._keep(tag, wanted=not self.leaving and owner(tag, members) == self.me)
        for lane, members in self.live.items():
            self._reap(lane, members)

    def leave(self) -> None:
        """Hand every partition back (once drained) and start no more; the service is stopping."""
        self.leaving = True
        self._wake.set()

    async def release(self) -> None:
        """At close: give up every lease still held and leave the lanes, so the others take
        over within a heartbeat."""
        for tag in list(self.held):
            await self.transport.drop_lease(tag)
        self.held.clear()
        await self.membership.leave()

    # --- one ordered partition ---

    async def _keep(self, tag: str, *, wanted: bool) -> None:
        held = self.held.get(tag)
        if held is not None and held.task.done():
            del self.held[tag]
            if not wanted:
                await self.transport.drop_lease(tag)  # drained: the new owner may start
            held = None
        if held is None:
            if wanted:
                await self._acquire(tag)
            return
        if not wanted:
            self._hand_back(held)  # keeps the lease until the pool has drained
        sent = self.clock.monotonic()
        if sent - held.renewed < self.lease_ms / 1000 / RENEWALS_PER_LEASE:
            return
        if not await self.transport.hold_lease(tag, self.lease_ms):
            log.warning("lease lost, stopping the partition's pool", partition=tag)
            self._hand_back(held)
            return
        held.renewed = sent

    async def _acquire(self, tag: str) -> None:
        sent = self.clock.monotonic()
        if await self.transport.hold_lease(tag, self.lease_ms):
            pool, task = self.launch(tag)
            task.add_done_callback(lambda _: self.retire(tag, pool))
            self.held[tag] = Held(pool, task, sent)
            log.info("partition taken", partition=tag)

    def _hand_back(self, held: Held) -> None:
        """Stop the pool; once it has drained, the next heartbeat drops the lease. A pool that
        outlasts the drain timeout is cancelled: its unfinished entries stay pending."""
        now = self.clock.monotonic()
        if held.handing_back_since is None:
            held.handing_back_since = now
            held.pool.stop()
        elif now - held.handing_back_since > self.drain_timeout_s:
            held.task.cancel()

    # --- shared partitions ---

    def _reap(self, lane: str, members: frozenset[str]) -> None:
        """When the lane's members change, the shared partitions may have new keepers, who
        look at their timers now; when a member left (and at start), take over what it left
        pending here. The idle bound keeps two survivors from both taking one entry."""
        before = self._seen.get(lane)
        self._seen[lane] = members
        if before == members:
            return
        gone = before is None or not before <= members
        for pool in self.shared(lane):
            pool.promoter.wake()
            if gone:
                pool.take_over(members, self.lease_ms // 2)
