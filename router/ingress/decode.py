"""Decoding bodies into events: JSON or msgpack, inflated within bounds, counted before work.

Nothing here trusts its input: a body that does not decode is a DecodeError, a body with no
events an InvalidEvent, one with too many an EventTooLarge, and whether each element is an
object is judged one by one (`check_object`), so a bad element never takes its neighbours
with it.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import msgpack
import orjson

from router.errors import DecodeError, EventTooLarge, InvalidEvent

# 19 digits in a row may not fit 64 bits (signed or not). Every digit read as "0", then a
# substring search: two C-speed passes, where a regular expression costs ~1 ms per 100 kB.
_LONG_NUMBER = b"0" * 19
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")

# What parsing untrusted bytes may raise: bad syntax, nesting too deep (RecursionError), a
# msgpack map keyed by a list or map (TypeError, unhashable).
_MSGPACK_ERRORS = (
    ValueError,
    TypeError,
    RecursionError,
    msgpack.ExtraData,
    msgpack.FormatError,
    msgpack.StackError,
)


def decode_body(body: bytes, content_type: str | None = "application/json") -> list[Any]:
    """The events in a body: an object is one event, an array a batch of them.

    `content_type` None (MQTT carries none) means JSON if it parses, else msgpack. Raises
    DecodeError for bytes that do not decode and InvalidEvent for an empty array. The elements
    are returned as they are: whether each is an object is judged event by event, so one bad
    element never takes its neighbours with it.
    """
    kind = "msgpack" if _is_msgpack(content_type) else "JSON"
    try:
        value = (
            msgpack.unpackb(body, raw=False, strict_map_key=False)
            if kind == "msgpack"
            else _json(body)
        )
    except _MSGPACK_ERRORS as exc:
        if content_type is not None:
            raise DecodeError(f"body is not valid {kind}: {exc}") from exc
        try:
            value = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except _MSGPACK_ERRORS as again:
            raise DecodeError(f"body is neither JSON nor msgpack: {again}") from again
    events = value if isinstance(value, list) else [value]
    if not events:
        raise InvalidEvent("the body is an empty array")
    return events


def check_batch_size(events: list[Any], limit: int) -> list[Any]:
    """`events`, unless there are more than `limit` of them (EventTooLarge): one message or
    request must not hold Redis, nor this process, for long."""
    if len(events) > limit:
        raise EventTooLarge(len(events), limit, batch=True)
    return events


def check_object(event: Any, index: int) -> dict[str, Any]:
    """`event` if it is an object (a JSON object, a msgpack map); else InvalidEvent."""
    if not isinstance(event, dict):
        raise InvalidEvent(f"event {index} is a {type(event).__name__}, not an object")
    return event


def _json(body: bytes) -> Any:
    """orjson for speed, Python's json where they differ, so both accept the same bodies with
    the same values: orjson refuses numbers beyond a double and reads integers beyond 64 bits
    as floats (a changed value), so a body with 19 digits in a row takes the slow path."""
    if _LONG_NUMBER not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def _is_msgpack(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() in MSGPACK_TYPES


def inflated(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decompressed (gzip or deflate), never to more than `limit` bytes: past it,
    EventTooLarge, having held at most `limit` bytes of output."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise DecodeError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib, told by the header
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecodeError(f"body is not valid {encoding}: {exc}") from exc
    if len(out) > limit:
        raise EventTooLarge(None, limit)
    if not inflater.eof:
        raise DecodeError(f"body is not valid {encoding}: it ends before its end")
    return out
