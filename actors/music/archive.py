"""The music class's actor: a batch of interactions becomes lake rows (`model`) and then lake
segments, published before the batch is acknowledged.

The class's batch settings are the roll: a segment per partition every `batch.max_size` rows
or `batch.max_wait_ms`, whichever comes first. A crash after a segment was published and
before its entries were acknowledged hands the batch to another run; that run (and a retry,
after a run that failed half-way) first looks in the lake for the events it holds and writes
only the rest. So every interaction is in the lake once, and queries need no de-duplication.

Every `compact_every_s` the archiver also compacts the hours that ended `compact_after_s` ago
(`compaction`), off the batch path: a task of its own, started and stopped with the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from actors.api import Actor, PermanentFailure
from actors.music.compaction import Compactor
from actors.music.lake import Lake, partition_of
from actors.music.model import interaction

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.api import Context, Envelope
    from actors.music.lake import Segment


class LakeArchiver(Actor):
    """Writes each batch to the lake at `lake` (a path, or s3://bucket/prefix). In an object
    store, a request that takes longer than `request_timeout_s` fails the batch, which is
    retried: set the class no `timeout_ms` of its own, or an upload cut off in its thread
    could still land after the retry. Interactions are kept forever unless `retention_days`
    says otherwise (the compaction pass deletes older hours)."""

    def __init__(
        self,
        *,
        lake: str,
        request_timeout_s: float | str = 30.0,
        compact_every_s: float | str = 300.0,
        compact_after_s: float | str = 3600.0,
        compact_grace_s: float | str = 300.0,
        retention_days: float | str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(lake=lake, request_timeout_s=request_timeout_s, **options)
        # Seconds may come from the environment, as text: read them as numbers, or fail here.
        self.lake = Lake(lake, request_timeout_s=float(request_timeout_s))
        self.compactor = Compactor(
            self.lake,
            after_s=float(compact_after_s),
            grace_s=float(compact_grace_s),
            retention_days=None if retention_days in (None, "") else float(retention_days),
        )
        self.compact_every_s = float(compact_every_s)
        self._compacting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.compact_every_s > 0:
            self._compacting = asyncio.create_task(self._compact(), name="music-lake-compaction")

    async def stop(self) -> None:
        if self._compacting is not None:
            self._compacting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compacting
            self._compacting = None

    async def _compact(self) -> None:
        """A pass every `compact_every_s`; a pass that fails (the store away) is logged and
        the next one tries again: compaction is upkeep, nothing waits for it."""
        log = structlog.get_logger("switchyard.music").bind(lake=self.lake.url)
        while True:
            await asyncio.sleep(self.compact_every_s)
            try:
                done = await asyncio.to_thread(self.compactor.run)
            except Exception as exc:
                log.warning("lake compaction failed; trying again later", error=repr(exc))
                continue
            if done.compacted or done.deleted:
                log.info("lake compacted", partitions=done.compacted, merged=done.merged,
                         rows=done.rows, swept=done.deleted)  # fmt: skip

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        again = {e.id for e in events if e.attempt or ctx.redelivered(e)}
        segments, refused = await asyncio.to_thread(self._archive, events, again)
        for event, error in refused:  # no usable user: this one alone is a dead letter
            ctx.fail(event, error)
        if segments:
            ctx.log.info("lake segments published", segments=_described(segments))

    def _archive(
        self, events: Sequence[Envelope], again: set[str]
    ) -> tuple[list[Segment], list[tuple[Envelope, PermanentFailure]]]:
        """In a worker thread (reading rows and writing files is the batch's whole cost): the
        rows, less those already in the lake, written; and the events refused."""
        rows, refused = [], []
        for event in events:
            try:
                rows.append(interaction(event))
            except PermanentFailure as exc:
                refused.append((event, exc))
        if again:
            rows = self._not_yet_written(rows, again)
        return (self.lake.write(rows) if rows else []), refused

    def _not_yet_written(self, rows: list[dict[str, Any]], again: set[str]) -> list[dict[str, Any]]:
        """`rows` less those of `again` (events another run may have archived) that the lake
        already holds."""
        partitions = {partition_of(row["ts"]) for row in rows if row["event_id"] in again}
        written = self.lake.event_ids(partitions) & again
        return [row for row in rows if row["event_id"] not in written]

    async def handle(self, event: Envelope, ctx: Context) -> None:
        await self.handle_batch([event], ctx)


def _described(segments: list[Segment]) -> list[str]:
    return [f"{segment.partition} ({segment.rows} rows)" for segment in segments]
