"""Compressed HTTP bodies are inflated by Switchyard itself, never past `max_body_bytes`."""

from __future__ import annotations

import gzip
import zlib

import pytest

from router.errors import DecodeError, EventTooLarge
from router.ingress.decode import inflated

LIMIT = 1_000


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", " GZIP "])
def test_a_compressed_body_is_inflated(encoding: str) -> None:
    body = b'{"n": 1}' * 10
    packed = zlib.compress(body) if "deflate" in encoding else gzip.compress(body)
    assert inflated(packed, encoding, LIMIT) == body


@pytest.mark.parametrize("encoding", ["", "identity"])
def test_a_plain_body_is_left_as_it_is(encoding: str) -> None:
    assert inflated(b"\x1f\x8b not gzip", encoding, LIMIT) == b"\x1f\x8b not gzip"


def test_a_body_that_inflates_past_the_limit_is_too_large_whatever_its_packed_size() -> None:
    bomb = gzip.compress(b" " * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(EventTooLarge, match="over the limit of 1000 bytes"):
        inflated(bomb, "gzip", LIMIT)
    assert inflated(gzip.compress(b" " * LIMIT), "gzip", LIMIT) == b" " * LIMIT


@pytest.mark.parametrize(
    ("body", "encoding", "complaint"),
    [
        (b"not gzip at all", "gzip", "not valid gzip"),
        (gzip.compress(b'{"n": 1}', mtime=0)[:-8], "gzip", "ends before its end"),
        (gzip.compress(b"{}", mtime=0), "br", "'br' is not supported"),
    ],
)
def test_a_body_that_does_not_inflate_is_a_decode_error(
    body: bytes, encoding: str, complaint: str
) -> None:
    with pytest.raises(DecodeError, match=complaint):
        inflated(body, encoding, LIMIT)
