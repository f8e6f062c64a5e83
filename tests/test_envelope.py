"""The envelope codec and event ids."""

from __future__ import annotations

import msgpack
import pytest

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
    [b"", b"\xc1", b"not msgpack at all", msgpack.packb([1, 2, 3]), msgpack.packb({"id": 1})],
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
