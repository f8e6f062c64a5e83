"""The event envelope: what travels through the class streams, with its msgpack codec."""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any, NamedTuple

import msgpack
import ormsgpack

from router.errors import DecodeError

WIRE_VERSION = 2


_PROCESS_PREFIX = secrets.token_hex(5)
_SEQUENCE = itertools.count(secrets.randbelow(1 << 32))


# What ormsgpack packs its own way and msgpack refuses (datetimes, UUIDs, enums, dataclasses)
# it passes on instead, so that msgpack refuses it as before: whichever library packs, the
# bytes and the errors stay msgpack's.
_PACK_OPTIONS = (
    ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_UUID
)


def new_event_id(prefix: str | None = None) -> str:
    """A unique id that sorts by creation time: 32 hex digits, UUIDv7-like.

    Milliseconds since the epoch (48 bits), then a random per-process prefix (40 bits), then a
    per-process counter (40 bits): ids from one process strictly increase, ids from different
    processes sort by millisecond. About ten times cheaper than a random ULID, which matters on
    the ingest path. Events that arrive together may share one `event_id_prefix()`.
    """
    sequence = next(_SEQUENCE) & 0xFF_FFFF_FFFF
    return f"{prefix or event_id_prefix()}{sequence:010x}"


def event_id_prefix() -> str:
    """The first 22 digits of the ids made now: the millisecond and the process."""
    return f"{time.time_ns() // 1_000_000:012x}{_PROCESS_PREFIX}"


def child_event_id(parent_id: str, index: int) -> str:
    """The id of the `index`-th event emitted while handling `parent_id`.

    Deterministic, so a handler that runs twice emits the same ids and duplicates can be
    recognised downstream.
    """
    return f"{parent_id}.{index}"


class Envelope(NamedTuple):
    """One event on its way through Switchyard; immutable.

    `ingest_ts` and `source_ts` are Unix seconds (wall time crosses processes); `key` orders
    events within a class in stream mode; `attempt` counts handler runs that failed.

    A NamedTuple rather than a frozen dataclass: it is built for every event on both the
    ingest and the consume path, and costs a quarter as much to construct. Its field order
    is the wire order, so decoding is one `_make`.
    """

    id: str
    cls: str
    lane: str
    payload: Any
    key: str | None = None
    source: str = "http"
    topic: str = ""
    source_ts: float | None = None
    ingest_ts: float = 0.0
    attempt: int = 0

    def encode(self) -> bytes:
        """msgpack bytes for a stream entry. ormsgpack packs them, in about half of msgpack's
        time (bench.envelope_codec); what it does not pack (keys that are not strings,
        msgpack's ext types) msgpack does, or refuses: OverflowError beyond 64 bits, TypeError
        otherwise."""
        fields = (WIRE_VERSION, *self)
        try:
            return ormsgpack.packb(fields, option=_PACK_OPTIONS)
        except TypeError:
            data: bytes = msgpack.packb(fields, use_bin_type=True)
            return data

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """The envelope in `data`; raises DecodeError for anything else.

        ormsgpack reads it, in about three quarters of msgpack's time, and ignores bytes
        after the envelope; what it does not read (maps keyed by other than strings, ext
        types) msgpack does.
        """
        try:
            fields = ormsgpack.unpackb(data)
        except ValueError:
            fields = _unpacked_by_msgpack(data)
        if not isinstance(fields, list) or len(fields) != _WIRE_FIELDS or fields[0] != WIRE_VERSION:
            raise DecodeError("envelope has an unknown layout")
        return _new_tuple(cls, fields[1:])  # what `_make` does, minus a call

    def retried(self) -> Envelope:
        """The same event for its next attempt."""
        return self._replace(attempt=self.attempt + 1)


_WIRE_FIELDS = 1 + len(Envelope._fields)
_new_tuple = tuple.__new__


def _unpacked_by_msgpack(data: bytes) -> Any:
    """What ormsgpack left; not msgpack at all, or a map keyed by a list, is a DecodeError."""
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except (TypeError, ValueError) as exc:  # msgpack's own errors are ValueErrors
        raise DecodeError(f"envelope is not msgpack: {exc}") from exc
