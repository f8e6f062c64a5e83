"""A lake: rows of one schema kept as Parquet segments under Hive-style partitions of the UTC
date and hour of their time column, on a local disk or an S3-compatible object store, and
DuckDB's view of them. Every workload that keeps a durable log outside Redis keeps it in one:
the music interactions, the doorbell's timeline and its readings.

A lake is named by a URL: a path (`.switchyard/lake/music`, `file:///srv/lake`) or
`s3://bucket/prefix`. For S3 the endpoint and credentials come from the environment, as every
S3 tool reads them: `AWS_ENDPOINT_URL` (a local or non-AWS store), `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`.

A segment appears whole or not at all (the `ObjectStore` publishes it): on disk it is written
under a hidden temporary name in its partition folder and renamed; for an object store it is
built in a local file and uploaded once whole. Readers skip the hidden names.

A compacted segment (`compaction`) names in its Parquet metadata the segments it replaces;
readers leave those out while they still exist, so no row is ever read twice.

The methods block (pyarrow's file systems do): actors call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from router.storage.objects import ObjectStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import duckdb

SUFFIX = ".parquet"
S3_REQUEST_TIMEOUT_S = 30.0  # a store that does not answer fails the batch, which is retried
TEMPORARY = ObjectStore.TEMPORARY  # the suffix of a segment still being written on disk: never read
COMPACTED = "c-"  # the prefix of a compacted segment's name
REPLACES = b"switchyard.replaces"  # its metadata: the names of the segments it replaces
PARTITIONING = ds.partitioning(
    pa.schema([("date", pa.string()), ("hour", pa.int32())]), flavor="hive"
)


@dataclass(frozen=True, slots=True)
class Segment:
    """One published segment: its partition and path, and how many rows it holds."""

    partition: str  # date=2025-10-27/hour=14
    path: str
    rows: int


@dataclass(slots=True)
class Listing:
    """One partition's published segments (by name), and those a compacted segment replaced:
    still there (a compaction's sweep deletes them after a grace), but never read."""

    partition: str
    files: dict[str, pafs.FileInfo] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)  # name -> the compacted one

    @property
    def live(self) -> list[pafs.FileInfo]:
        return [info for name, info in sorted(self.files.items()) if name not in self.replaced]


class Lake:
    """Where one schema's segments live, and how to write and read them: rows are placed by
    the UTC date and hour of `time_column` (a timestamp column of `schema`)."""

    SUFFIX: ClassVar[str] = SUFFIX
    TEMPORARY: ClassVar[str] = TEMPORARY
    COMPACTED: ClassVar[str] = COMPACTED
    REPLACES: ClassVar[bytes] = REPLACES

    def __init__(
        self,
        url: str,
        schema: pa.Schema,
        time_column: str = "ts",
        *,
        request_timeout_s: float = S3_REQUEST_TIMEOUT_S,
    ) -> None:
        if schema.get_field_index(time_column) < 0:
            raise ValueError(f"lake {url!r}: the schema has no time column {time_column!r}")
        try:
            self.store = ObjectStore(url, request_timeout_s=request_timeout_s)
        except ValueError:
            raise ValueError(f"lake {url!r}: a path, file:// or s3:// URL") from None
        self.url = url
        self.schema = schema
        self.time_column = time_column
        self.is_local = self.store.is_local
        self.root = self.store.root
        self.fs: pafs.FileSystem = self.store.fs
        self._replaces: dict[str, frozenset[str]] = {}  # compacted segments are never rewritten

    # --- writing ---

    def write(self, rows: Sequence[dict[str, Any]]) -> list[Segment]:
        """Write `rows` as one segment per partition they fall in; each published whole."""
        by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_partition[partition_of(row[self.time_column])].append(row)
        return [self._publish(partition, part) for partition, part in sorted(by_partition.items())]

    def _publish(self, partition: str, rows: list[dict[str, Any]]) -> Segment:
        table = pa.Table.from_pylist(rows, schema=self.schema)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        return self.publish(partition, name, table)

    def publish(self, partition: str, name: str, table: pa.Table) -> Segment:
        """Write `table` as segment `name` of `partition`, visible only once whole."""
        built = self.scratch(partition, name)
        try:
            pq.write_table(table, built, compression="zstd")
        except BaseException:
            Path(built).unlink(missing_ok=True)
            raise
        return self.publish_file(partition, name, built, table.num_rows)

    def scratch(self, partition: str, name: str) -> str:
        """A local path to build segment `name` in before `publish_file`: a hidden name beside
        it on disk, in the machine's temporary folder for an object store."""
        return self.store.scratch(f"{partition}/{name}")

    def publish_file(self, partition: str, name: str, built: str, rows: int) -> Segment:
        """Publish the segment built at `built` (a `scratch` path) whole, as `name`."""
        key = f"{partition}/{name}"
        self.store.publish_file(key, built)
        final = self.store.path(key)
        if not self.is_local and pq.read_metadata(final, filesystem=self.fs).num_rows != rows:
            self.fs.delete_file(final)
            raise OSError(f"{final}: the store kept a different segment than was uploaded")
        return Segment(partition, final, rows)

    # --- reading ---

    def segments(self, partitions: Iterable[str] | None = None) -> list[str]:
        """Paths of the segments to read (of `partitions`, or all): the published ones, less
        those a compacted segment replaced."""
        return sorted(info.path for listing in self.listings(partitions) for info in listing.live)

    def listings(self, partitions: Iterable[str] | None = None) -> list[Listing]:
        """Each partition's published segments, and which of them are replaced."""
        selectors = (
            [pafs.FileSelector(f"{self.root}/{p}", allow_not_found=True) for p in partitions]
            if partitions is not None
            else [pafs.FileSelector(self.root, recursive=True, allow_not_found=True)]
        )
        by_partition: dict[str, Listing] = {}
        for selector in selectors:
            for info in self.fs.get_file_info(selector):
                name = info.base_name
                if info.is_file and name.endswith(SUFFIX) and not name.startswith("."):
                    partition = info.path[len(self.root) + 1 : -len(name) - 1]
                    listing = by_partition.setdefault(partition, Listing(partition))
                    listing.files[name] = info
        for listing in by_partition.values():
            files = listing.files
            found = replaced_by({name: self.replaces(info.path) for name, info in files.items()})
            listing.replaced = {name: by for name, by in found.items() if name in files}
        return [by_partition[partition] for partition in sorted(by_partition)]

    def replaces(self, path: str) -> frozenset[str]:
        """The names of the segments the segment at `path` replaces (none, unless compacted)."""
        name = path.rsplit("/", 1)[-1]
        if not name.startswith(COMPACTED):
            return frozenset()
        if path not in self._replaces:
            metadata = pq.read_metadata(path, filesystem=self.fs).metadata or {}
            self._replaces[path] = frozenset(json.loads(metadata.get(REPLACES, b"[]")))
        return self._replaces[path]

    def delete(self, path: str) -> None:
        self.fs.delete_file(path)

    def drop(self, partition: str) -> None:
        """Delete a whole partition (retention), and its date folder once that is empty."""
        self.fs.delete_dir(f"{self.root}/{partition}")
        date = f"{self.root}/{partition.split('/', 1)[0]}"
        selector = pafs.FileSelector(date, allow_not_found=True)
        if self.is_local and not self.fs.get_file_info(selector):
            self.fs.delete_dir(date)

    def column(self, partitions: Iterable[str], name: str) -> list[Any]:
        """Every value of column `name` in these partitions (the ids a replay must not write
        again, say)."""
        paths = self.segments(partitions)
        if not paths:
            return []
        table = ds.dataset(paths, schema=self.schema, filesystem=self.fs, format="parquet")
        values: list[Any] = table.to_table(columns=[name]).column(name).to_pylist()
        return values

    def event_ids(self, partitions: Iterable[str]) -> set[str]:
        """The event ids already in these partitions: what a replay must not write again."""
        return set(self.column(partitions, "event_id"))

    def register(
        self,
        con: duckdb.DuckDBPyConnection,
        name: str,
        partitions: Iterable[str] | None = None,
    ) -> None:
        """Make the lake (its `partitions`, or all) a view `name` in DuckDB, with the `date`
        and `hour` partition columns (filter on `date` and DuckDB skips whole folders).

        On disk DuckDB reads the files itself (its fastest path); in an object store it scans
        them through pyarrow, which speaks S3 without a DuckDB extension to download.
        """
        paths = self.segments(partitions)
        if self.is_local and paths:
            files = ", ".join(f"'{_quoted(path)}'" for path in paths)
            con.execute(
                f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{files}], "
                "hive_partitioning = true, hive_types = {'date': VARCHAR, 'hour': INTEGER})"
            )
            return
        paths = [] if self.is_local else paths
        schema = self._with_partitions()
        source: Any = (
            ds.dataset(
                paths, schema=schema, filesystem=self.fs, format="parquet",
                partitioning=PARTITIONING, partition_base_dir=self.root,
            )
            if paths
            else pa.Table.from_pylist([], schema=schema)
        )  # fmt: skip
        con.register(f"{name}_source", source)
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {name}_source")

    def _with_partitions(self) -> pa.Schema:
        return self.schema.append(pa.field("date", pa.string())).append(
            pa.field("hour", pa.int32())
        )


def replaced_by(replaces: dict[str, frozenset[str]]) -> dict[str, str]:
    """Of one partition's segments (name -> the names it replaces), those not to read, each
    with the compacted segment that holds its rows.

    Compactions of a partition can overlap (two archivers, or one that crashed before its
    sweep), but their sets nest: each lists every segment published when it looked, and a
    segment is deleted only after the compaction that replaced it was published. So the
    compactions nobody replaced and whose set is no smaller than another's are the ones read,
    and everything they replace, directly or through an older compaction, is not. Two equal
    sets are one file: a compacted segment is named by what it replaces.
    """
    compacted = {name: names for name, names in replaces.items() if names}
    inside = {name for names in compacted.values() for name in names}
    found: dict[str, str] = {}
    tops = []
    for name in (name for name in compacted if name not in inside):
        larger = [o for o in compacted if o not in inside and compacted[name] < compacted[o]]
        if larger:
            found[name] = larger[0]  # an earlier look at the same segments: the larger holds it
        else:
            tops.append(name)
    for top in tops:
        waiting = list(compacted[top])
        while waiting:
            name = waiting.pop()
            if name not in found:
                found[name] = top
                waiting.extend(compacted.get(name, ()))
    return found


def partition_of(moment: datetime) -> str:
    """The partition folder of a row at `moment` (UTC)."""
    utc = moment.astimezone(UTC)
    return f"date={utc:%Y-%m-%d}/hour={utc.hour}"


def partitions_between(since: datetime, until: datetime) -> list[str]:
    """The partition folders of every hour that overlaps [since, until)."""
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    found = []
    while start < until:
        found.append(partition_of(start))
        start += timedelta(hours=1)
    return found


def _quoted(path: str) -> str:
    return path.replace("'", "''")
