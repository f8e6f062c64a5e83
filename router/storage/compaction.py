"""Compaction and retention of a lake: an hour's many small segments become one, so a lake
stays a few files per hour however often it rolls, and hours past their retention go.

Rolling every few seconds (an archiver's `batch.max_wait_ms`) leaves hundreds of segments an
hour, and a query pays for each file it opens. Once an hour has been over for `after_s`, its
segments are merged into one compacted segment, named by the segments it replaces and
listing them in its metadata (`lake.replaced_by` says why readers then never read a row
twice, even with two archivers compacting at once or a crash half-way). The replaced
segments are deleted `grace_s` later, so a query that listed them just before can still read
them. An hour that ended more than `retention_days` ago is deleted whole (None: kept forever).

Memory stays bounded: the merge reads one row group at a time and writes row groups of
`ROW_GROUP_ROWS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from router.storage.lake import COMPACTED, REPLACES, SUFFIX

if TYPE_CHECKING:
    from router.storage.lake import Lake, Listing, Segment

ROW_GROUP_ROWS = 128 * 1024
HOUR_S = 3600


@dataclass(slots=True)
class Pass:
    """What one compaction pass did."""

    compacted: int = 0  # partitions
    merged: int = 0  # segments merged into those
    deleted: int = 0  # replaced segments swept
    rows: int = 0
    expired: int = 0  # partitions deleted whole, past the retention


class Compactor:
    """Compacts the closed hours of `lake`, sweeps what compaction replaced, and deletes the
    hours past `retention_days`."""

    def __init__(
        self,
        lake: Lake,
        *,
        after_s: float = 3600.0,
        grace_s: float = 300.0,
        retention_days: float | None = None,
    ) -> None:
        if retention_days is not None and retention_days <= 0:
            raise ValueError(f"retention_days must be positive, not {retention_days}")
        self.lake = lake
        self.after_s = after_s
        self.grace_s = grace_s
        self.retention_days = retention_days
        self._task: asyncio.Task[None] | None = None

    def run(self, now: datetime | None = None) -> Pass:
        """One pass over every partition (blocking: run it in a thread)."""
        now = now or datetime.now(UTC)
        done = Pass()
        for listing in self.lake.listings():
            if self.expired(listing.partition, now):
                self.lake.drop(listing.partition)
                done.expired += 1
                continue
            done.deleted += self.sweep(listing, now)
            if len(listing.live) > 1 and closed(listing.partition, now, self.after_s):
                segment = self.compact(listing)
                done.compacted += 1
                done.merged += len(listing.live)
                done.rows += segment.rows
        return done

    def expired(self, partition: str, now: datetime) -> bool:
        """Whether all of `partition` is older than the retention."""
        if self.retention_days is None:
            return False
        return closed(partition, now, self.retention_days * 86400)

    def start(self, every_s: float, logger: str = "switchyard.lake") -> None:
        """Run `forever` as a task of this compactor's own (an actor's `start`), until `stop`."""
        if every_s > 0 and self._task is None:
            name = f"lake-compaction:{self.lake.url}"
            self._task = asyncio.create_task(self.forever(every_s, logger), name=name)

    async def stop(self) -> None:
        """Cancel the task `start` started, and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def forever(self, every_s: float, logger: str = "switchyard.lake") -> None:
        """A pass every `every_s`, in a thread; a pass that fails (the store away) is logged
        and the next one tries again: compaction is upkeep, nothing waits for it. Run it as a
        task its owner cancels."""
        log = structlog.get_logger(logger).bind(lake=self.lake.url)
        while True:
            await asyncio.sleep(every_s)
            try:
                done = await asyncio.to_thread(self.run)
            except Exception as exc:
                log.warning("lake compaction failed; trying again later", error=repr(exc))
                continue
            if done.compacted or done.deleted or done.expired:
                log.info("lake compacted", partitions=done.compacted, merged=done.merged,
                         rows=done.rows, swept=done.deleted, expired=done.expired)  # fmt: skip

    def compact(self, listing: Listing) -> Segment:
        """Merge the partition's live segments into one that replaces every segment there."""
        present = sorted(listing.files)
        digest = hashlib.sha256("\n".join(present).encode()).hexdigest()[:24]
        name = f"{COMPACTED}{digest}{SUFFIX}"
        metadata = {REPLACES: json.dumps(present).encode()}
        built = self.lake.scratch(listing.partition, name)
        rows = 0
        schema = self.lake.schema.with_metadata(metadata)
        with pq.ParquetWriter(built, schema, compression="zstd") as writer:
            pending: list[pa.RecordBatch] = []
            for info in listing.live:
                for batch in pq.ParquetFile(info.path, filesystem=self.lake.fs).iter_batches():
                    pending.append(batch)
                    rows += batch.num_rows
                    if sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
                        writer.write_table(_table(pending, schema))
                        pending = []
            if pending:
                writer.write_table(_table(pending, schema))
        return self.lake.publish_file(listing.partition, name, built, rows)

    def sweep(self, listing: Listing, now: datetime) -> int:
        """Delete the replaced segments whose compaction is older than the grace."""
        deleted = 0
        cutoff = now.timestamp() - self.grace_s
        for name, by in sorted(listing.replaced.items()):
            compacted_at = listing.files[by].mtime
            if compacted_at is not None and compacted_at.timestamp() <= cutoff:
                self.lake.delete(listing.files[name].path)
                deleted += 1
        return deleted


def closed(partition: str, now: datetime, after_s: float) -> bool:
    """Whether `partition` (date=YYYY-MM-DD/hour=H) ended at least `after_s` before `now`."""
    date, hour = (part.split("=", 1)[1] for part in partition.split("/"))
    start = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(hours=int(hour))
    return (now - start).total_seconds() >= HOUR_S + after_s


def _table(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches(batches).replace_schema_metadata(schema.metadata)
