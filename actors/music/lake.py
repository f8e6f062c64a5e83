"""The music lake: the interactions (`schema`) in a lake (`actors.api.Lake`: Parquet segments
under Hive-style date and hour partitions of `ts`, on a local disk or an S3-compatible object
store, published atomically, compacted), and DuckDB's view of them as `interactions`.

The names the music modules, tests and benchmarks have always used stay here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.api import Lake as _Lake
from actors.api import LakeListing as Listing
from actors.api import LakeSegment as Segment
from actors.api import partition_of, replaced_by
from actors.music.schema import SCHEMA

if TYPE_CHECKING:
    from collections.abc import Iterable

    import duckdb

SUFFIX = _Lake.SUFFIX
TEMPORARY = _Lake.TEMPORARY  # the suffix of a segment still being written on disk: never read
COMPACTED = _Lake.COMPACTED  # the prefix of a compacted segment's name
REPLACES = _Lake.REPLACES  # its metadata: the names of the segments it replaces
S3_REQUEST_TIMEOUT_S = 30.0

__all__ = [
    "COMPACTED", "REPLACES", "SUFFIX", "TEMPORARY", "Lake", "Listing", "Segment",
    "partition_of", "replaced_by",
]  # fmt: skip


class Lake(_Lake):
    """The music lake at `url`: interactions placed by their `ts`."""

    def __init__(self, url: str, *, request_timeout_s: float = S3_REQUEST_TIMEOUT_S) -> None:
        super().__init__(url, SCHEMA, "ts", request_timeout_s=request_timeout_s)

    def register(
        self,
        con: duckdb.DuckDBPyConnection,
        name: str = "interactions",
        partitions: Iterable[str] | None = None,
    ) -> None:
        super().register(con, name, partitions)
