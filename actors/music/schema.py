"""The music lake's row: one user interaction, as analytics reads it.

The lake is Parquet files under Hive-style partitions of the interaction's UTC date and hour,
`<root>/date=2025-10-27/hour=14/<segment>.parquet`. Every column but `event_id`, `user_id`,
`action`, `ts`, `ts_status` and `ingest_ts` may be null. `date` and `hour` are the partition
folders' names, not columns of the files.
"""

from __future__ import annotations

import pyarrow as pa

# The interactions the routes accept: what users do, and what they play.
EXPLICIT_ACTIONS = (
    "like_song", "skip_song", "change_song", "select_channel", "remove_channel",
    "add_to_playlist", "remove_from_playlist",
)  # fmt: skip
PLAYBACK_ACTIONS = ("play_start", "play_end")
ACTIONS = EXPLICIT_ACTIONS + PLAYBACK_ACTIONS

# Where in the app, on what, to what: kept as text.
TEXT_FIELDS = (
    "screen", "section", "device", "platform", "app_version",
    "track", "artist", "genre", "channel", "playlist",
)  # fmt: skip

TS_SOURCE, TS_MISSING, TS_INVALID = "source", "missing", "invalid"

SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),  # Switchyard's id of the event
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        # When: the source's timestamp in UTC; the ingest time when it had none, or none usable
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ts_status", pa.string(), nullable=False),  # source | missing | invalid
        pa.field("ts_raw", pa.string()),  # the timestamp as sent, when one was
        pa.field("ingest_ts", pa.timestamp("us", tz="UTC"), nullable=False),
        *(pa.field(name, pa.string()) for name in TEXT_FIELDS),
        pa.field("seconds_listened", pa.float64()),  # play_end: how long the track played
        pa.field("completed", pa.bool_()),  # play_end: whether it played to the end
        pa.field("invalid", pa.list_(pa.string())),  # fields whose values could not be used
    ]
)
