"""Body decoding and source timestamps at ingress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest

from router.errors import DecodeError, InvalidEvent
from router.ingress.decode import check_object, decode_body
from router.routing.addressing import source_timestamp


def test_a_json_object_is_one_event() -> None:
    assert decode_body(b'{"user_id": 10}') == [{"user_id": 10}]


def test_a_json_array_is_a_batch() -> None:
    assert decode_body(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    ("number", "value"),
    [
        (b"18446744073709551615", 2**64 - 1),
        (b"100000000000000000000000000000", 10**29),  # beyond 64 bits: an int, not a float
        (b"-9223372036854775809", -(2**63) - 1),
        (b"1e400", float("inf")),
        (b"0.1", 0.1),
    ],
)
def test_json_numbers_keep_their_exact_value(number: bytes, value: float) -> None:
    [event] = decode_body(b'{"n": ' + number + b', "id": "x"}')
    assert event["n"] == value
    assert type(event["n"]) is type(value)


def test_msgpack_bodies_are_read_by_content_type() -> None:
    body = msgpack.packb([{"a": 1}, {"b": b"\x01"}])
    assert decode_body(body, "application/msgpack") == [{"a": 1}, {"b": b"\x01"}]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{nope", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"\xc1", "application/msgpack"),
    ],
)
def test_undecodable_bodies_raise_decode_error(body: bytes, content_type: str) -> None:
    with pytest.raises(DecodeError):
        decode_body(body, content_type)


def test_an_empty_array_holds_no_events_and_is_invalid() -> None:
    with pytest.raises(InvalidEvent):
        decode_body(b"[]")


@pytest.mark.parametrize(
    ("body", "elements"),
    [
        (b"42", [42]),
        (b'"text"', ["text"]),
        (b"[1, 2]", [1, 2]),
        (b'[{"a": 1}, null]', [{"a": 1}, None]),
    ],
)
def test_elements_are_decoded_as_they_are_and_judged_one_by_one(
    body: bytes, elements: list[Any]
) -> None:
    assert decode_body(body) == elements
    for index, element in enumerate(elements):
        if isinstance(element, dict):
            assert check_object(element, index) is element
        else:
            with pytest.raises(InvalidEvent, match=f"event {index} is a .*, not an object"):
                check_object(element, index)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"timestamp": "2025-10-27T14:03:00"},
            datetime(2025, 10, 27, 14, 3, tzinfo=UTC).timestamp(),
        ),
        (
            {"timestamp": "2025-10-27T16:03:00+02:00"},
            datetime(2025, 10, 27, 14, 3, tzinfo=UTC).timestamp(),
        ),
        ({"timestamp": 1_761_573_780}, 1_761_573_780.0),
        ({"timestamp": 1_761_573_780_000}, 1_761_573_780.0),
        ({"timestamp": "yesterday"}, None),
        ({"timestamp": True}, None),
        ({}, None),
        ([1, 2], None),
    ],
)
def test_the_source_timestamp_is_read_when_legible(payload: Any, expected: float | None) -> None:
    assert source_timestamp(payload) == expected
