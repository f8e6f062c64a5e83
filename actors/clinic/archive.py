"""The visit archive: each closed visit, its whole journey in one row, kept in the lake at
`<lake>/visits` (Parquet, by the UTC date and hour of arrival), where the look-ups find it
once its record in Redis has gone.

Departure sends each closed visit to the class `clinic.visits`; `VisitArchiver` writes each
batch before it is acknowledged. A visit already in the lake (a batch run again after a
crash, a patient released twice in a race) is not written again.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from actors.api import Actor, Compactor, Lake, PermanentFailure, partition_of
from actors.clinic.journey import TIMES, read_visit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors.api import Context, Envelope

TEXTS = ("registration_desk", "vaccination_station", "nurse", "vaccine", "lot", "screening")
SCHEMA = pa.schema(
    [
        pa.field("visit_id", pa.string(), nullable=False),
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        *(pa.field(name, pa.timestamp("us", tz="UTC")) for name in TIMES),
        pa.field("temperature_c", pa.float64()),
        *(pa.field(name, pa.string()) for name in TEXTS),
        pa.field("visit_s", pa.float64()),
        pa.field("reactions", pa.string(), nullable=False),  # a JSON list, oldest first
    ]
)


def visits_lake(root: str, request_timeout_s: float = 30.0) -> Lake:
    """The archive under a clinic lake root (a path or s3://bucket/prefix)."""
    return Lake(f"{root.rstrip('/')}/visits", SCHEMA, "arrived_at",
                request_timeout_s=request_timeout_s)  # fmt: skip


def row(fields: dict[str, Any]) -> dict[str, Any]:
    """The lake row of a closed visit's record; PermanentFailure for one that is not."""
    text = {k: v for k, v in fields.items() if isinstance(k, str) and isinstance(v, str)}
    shown = read_visit(text)
    for name in ("visit_id", "patient_id", "outcome"):
        if not isinstance(shown.get(name), str) or not shown[name]:
            raise PermanentFailure(f"a closed visit without {name}")
    if not isinstance(shown.get("arrived_at"), float) or "departed_at" not in shown:
        raise PermanentFailure("a closed visit needs arrived_at and departed_at times")
    times = {name: _moment(shown.get(name)) for name in TIMES}
    if times["arrived_at"] is None:
        raise PermanentFailure("arrived_at is not a time")
    return {
        "visit_id": shown["visit_id"], "patient_id": shown["patient_id"],
        "outcome": shown["outcome"], **times,
        "temperature_c": _float(shown.get("temperature_c")),
        **{name: shown.get(name) for name in TEXTS},
        "visit_s": _float(shown.get("visit_s")),
        "reactions": json.dumps(shown["reactions"], sort_keys=True),
    }  # fmt: skip


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, float) or not 0 <= value < 32503680000:
        return None
    return datetime.fromtimestamp(value, UTC)


def _float(value: Any) -> float | None:
    return value if isinstance(value, float) else None


class VisitArchiver(Actor):
    """Writes each batch of closed visits to the lake under `lake` (`<lake>/visits`), and
    every `compact_every_s` compacts its closed hours; visits older than `retention_days`
    are deleted (empty: kept forever)."""

    def __init__(
        self,
        *,
        lake: str,
        retention_days: float | str | None = None,
        compact_every_s: float | str = 300.0,
        request_timeout_s: float | str = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(lake=lake, retention_days=retention_days, **options)
        self.lake = visits_lake(lake, float(request_timeout_s))
        retention = (
            None if retention_days is None or retention_days == "" else float(retention_days)
        )
        self.compactor = Compactor(self.lake, retention_days=retention)
        self.compact_every_s = float(compact_every_s)

    async def start(self) -> None:
        self.compactor.start(self.compact_every_s, "switchyard.clinic")

    async def stop(self) -> None:
        await self.compactor.stop()

    async def handle_batch(self, events: Sequence[Envelope], ctx: Context) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for event in events:
            try:
                visit = row(event.payload if isinstance(event.payload, dict) else {})
            except PermanentFailure as exc:
                ctx.fail(event, exc)
                continue
            rows.setdefault(visit["visit_id"], visit)  # released twice in one batch: once
        if rows:
            await asyncio.to_thread(self._write, list(rows.values()))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        """In a worker thread: the visits the lake does not hold yet."""
        partitions = {partition_of(r["arrived_at"]) for r in rows}
        held = set(self.lake.column(partitions, "visit_id"))
        fresh = [r for r in rows if r["visit_id"] not in held]
        if fresh:
            self.lake.write(fresh)

    async def handle(self, event: Envelope, ctx: Context) -> None:
        await self.handle_batch([event], ctx)
