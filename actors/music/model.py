"""One interaction as the lake keeps it: read from whatever a device sent, never refused for
a bad field.

A value that cannot be used (a boolean where text goes, an object, a timestamp nobody can
read, a year 99999) is left out and its field named in `invalid`, so the row is kept and the
bad value counted; only an event with no usable user is refused (a dead letter), since it
belongs to nobody. Timestamps: ISO 8601 with or without a zone (none means UTC, as in the
brief's `2025-10-27T14:03:00`), or Unix seconds or milliseconds; kept in UTC, the raw value
beside them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from actors.api import PermanentFailure
from actors.music.schema import TEXT_FIELDS, TS_INVALID, TS_MISSING, TS_SOURCE

if TYPE_CHECKING:
    from actors.api import Envelope

MAX_TEXT = 256  # characters kept of a text field
MAX_RAW_TS = 64  # characters kept of an unreadable timestamp
MAX_SECONDS_LISTENED = 24 * 3600.0
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
MILLISECONDS_FROM = 10**11  # a Unix time this large is in milliseconds (seconds: year 5138)
TRACK_PARTS = ("artist", "genre")  # read from a `track` object when not given on their own


def interaction(event: Envelope) -> dict[str, Any]:
    """The lake row of `event`. Its `action` is one the routes matched: one of
    `schema.ACTIONS`."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    invalid: list[str] = []
    row: dict[str, Any] = {
        "event_id": event.id,
        "user_id": _user(payload.get("user_id")),
        "action": str(payload.get("action")),
        "ingest_ts": datetime.fromtimestamp(event.ingest_ts, UTC),
    }
    row |= _when(payload.get("timestamp"), row["ingest_ts"], invalid)
    track = payload.get("track")
    nested = track if isinstance(track, dict) else {}
    for name in TEXT_FIELDS:
        value = payload.get(name)
        if name == "track" and isinstance(value, dict):
            value = value.get("id", value.get("title"))
        if value is None and name in TRACK_PARTS:
            value = nested.get(name)
        row[name] = _text(name, value, invalid)
    row["seconds_listened"] = _seconds(payload.get("seconds_listened"), invalid)
    row["completed"] = _flag("completed", payload.get("completed"), invalid)
    row["invalid"] = invalid
    return row


def _user(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()[:MAX_TEXT]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise PermanentFailure(f"user_id must be text or a whole number, not {type(value).__name__}")


def _when(value: Any, ingested: datetime, invalid: list[str]) -> dict[str, Any]:
    """`ts`, `ts_status` and `ts_raw`: the source's time if usable, else the ingest time."""
    if value is None:
        return {"ts": ingested, "ts_status": TS_MISSING, "ts_raw": None}
    moment = _moment(value)
    if moment is None:
        invalid.append("timestamp")
        return {"ts": ingested, "ts_status": TS_INVALID, "ts_raw": _raw(value)}
    return {"ts": moment, "ts_status": TS_SOURCE, "ts_raw": _raw(value)}


def _moment(value: Any) -> datetime | None:
    moment: datetime | None = None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = value / 1000 if abs(value) >= MILLISECONDS_FROM else value
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if moment is None or not EARLIEST <= moment < LATEST:
        return None
    return moment.astimezone(UTC)


def _raw(value: Any) -> str:
    return str(value)[:MAX_RAW_TS]


def _text(name: str, value: Any, invalid: list[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    invalid.append(name)
    return None


def _seconds(value: Any, invalid: list[str]) -> float | None:
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and math.isfinite(value) and 0 <= value <= MAX_SECONDS_LISTENED:
        return float(value)
    invalid.append("seconds_listened")
    return None


def _flag(name: str, value: Any, invalid: list[str]) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    invalid.append(name)
    return None
