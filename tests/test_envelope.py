"""The envelope codec and event ids."""

from __future__ import annotations

import datetime
import enum
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.errors import DecodeError
from router.streams.envelope import Envelope, child_event_id, new_event_id


def sample() -> Envelope:
    return Envelope(
        id=new_event_id(),
        cls="music.skip_song",
        lane="medium",
        payload={"user_id": 10, "action": "skip_song", "nested": {"a": [1, 2]}, "raw": b"\x00"},
        key="10",
        source="http",
        topic="music/10/events",
        source_ts=1_761_573_780.0,
        ingest_ts=1_761_573_780.5,
        attempt=2,
    )


def test_an_envelope_survives_the_round_trip() -> None:
    envelope = sample()
    assert Envelope.decode(envelope.encode()) == envelope


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"not msgpack at all",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"id": 1}),
        b"\x81\x91\x01\x02",  # a map keyed by a list, which no dict can hold
        b"\x91" * 5_000 + b"\x01",  # nested deeper than either library reads
    ],
)
def test_bytes_that_are_not_an_envelope_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Envelope.decode(data)


def test_event_ids_are_unique_and_sort_by_creation() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(event_id) == 32 for event_id in ids)


def test_child_ids_are_derived_deterministically_from_the_parent() -> None:
    parent = new_event_id()
    assert child_event_id(parent, 0) == child_event_id(parent, 0) == f"{parent}.0"
    assert child_event_id(parent, 1) != child_event_id(parent, 0)


def test_retried_counts_the_attempt_and_keeps_the_rest() -> None:
    envelope = sample()
    again = envelope.retried()
    assert again.attempt == envelope.attempt + 1
    assert (again.id, again.payload) == (envelope.id, envelope.payload)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)  # NaN is packed alike too, but never equals itself
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_an_envelope_is_packed_byte_for_byte_as_msgpack_packs_it(payload: Any) -> None:
    """Entries written before ormsgpack packed envelopes, or by another version, read alike."""
    envelope = sample()._replace(payload=payload)
    fields = (2, *envelope)
    assert envelope.encode() == msgpack.packb(fields, use_bin_type=True)
    assert Envelope.decode(msgpack.packb(fields, use_bin_type=True)).payload == envelope.payload


@pytest.mark.parametrize(
    "payload", [{1: "one", None: "none"}, {b"raw": 1}, {"ext": msgpack.ExtType(5, b"x")}]
)
def test_payloads_only_msgpack_packs_still_round_trip(payload: dict[Any, Any]) -> None:
    envelope = sample()._replace(payload=payload)
    assert Envelope.decode(envelope.encode()) == envelope


class Colour(enum.Enum):
    RED = 1


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"n": 2**64}, OverflowError),
        ({"n": -(2**63) - 1}, OverflowError),
        ({"at": datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)}, TypeError),
        ({"colour": Colour.RED}, TypeError),
        ({"set": {1, 2}}, TypeError),
    ],
)
def test_a_payload_msgpack_cannot_store_is_refused_with_msgpack_s_error(
    payload: dict[str, Any], error: type[Exception]
) -> None:
    """Ingest turns these into a 400 naming the event; an emit, into the event's failure."""
    with pytest.raises(error):
        sample()._replace(payload=payload).encode()
