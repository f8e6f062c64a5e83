"""Property-based tests of the ingest path: decoding arbitrary bytes, routing arbitrary topics
and payloads with the repository's own config.yaml, and accounting for every message.

No Redis: ingest talks to a fake transport that records what it was asked to write.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from router.clock import SystemClock
from router.config import Config, load_config
from router.errors import DecodeError, InvalidEvent
from router.ingress.decode import decode_body
from router.ingress.ingest import Ingest
from router.metrics import Metrics
from router.routing.addressing import Addresser
from router.routing.rules import Router
from router.streams import keys
from router.streams.envelope import Envelope
from router.streams.transport import Written

if TYPE_CHECKING:
    from collections.abc import Sequence

    from router.streams.transport import Fields, Outgoing, Transport

CONFIG_YAML = Path(__file__).resolve().parent.parent / "config.yaml"
CONTENT_TYPES = [None, "application/json", "application/msgpack"]
SETTINGS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
QUICK = settings(SETTINGS, max_examples=500)


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(CONFIG_YAML, environ={})


# --- strategies ---

# Words that the routes in config.yaml look for, mixed with anything at all.
TOPIC_WORDS = [
    "music", "doorbell", "clinic", "events", "button_press", "motion_detected",
    "sound_detected", "temperature", "light", "video_upload", "arrival", "registration",
    "vaccination", "monitoring", "departure", "+", "#", "", "u1", "front-door",
]  # fmt: skip
FIELD_NAMES = [
    "action", "user_id", "patient_id", "device_id", "event_id", "timestamp", "key", "priority",
]  # fmt: skip
ACTIONS = [
    "like_song", "skip_song", "change_song", "select_channel", "remove_channel",
    "add_to_playlist", "remove_from_playlist", "create_playlist",
]  # fmt: skip

# 64-bit integers: what both JSON and msgpack carry; `wide_values` adds bigger ones.
integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)
scalars = (
    st.none()
    | st.booleans()
    | integers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(ACTIONS + TOPIC_WORDS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values)
# JSON alone carries integers of any size (msgpack stops at 64 bits).
wide_values = st.recursive(
    scalars | st.integers() | st.integers(min_value=2**64).map(lambda n: n * 10**300),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
wide_payloads = st.dictionaries(st.sampled_from(FIELD_NAMES), wide_values, max_size=4)
topics = st.lists(st.sampled_from(TOPIC_WORDS) | st.text(max_size=6), min_size=1, max_size=4).map(
    "/".join
)


def encoded(value: Any, how: str) -> bytes:
    if how == "json":
        return json.dumps(value).encode()
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


# Bytes made of msgpack type markers and small values: far likelier than uniform random bytes
# to form (nearly) valid msgpack maps and arrays, nested or not.
MSGPACK_MARKERS = [
    0x80, 0x81, 0x82, 0x90, 0x91, 0x92, 0xA1, 0x61, 0x00, 0x01, 0x7F, 0xC0, 0xC2, 0xC3,
    0xCA, 0xCC, 0xD9, 0xDC, 0xDE, 0xC4, 0xD4, 0xFF,
]  # fmt: skip
msgpackish = st.lists(st.sampled_from(MSGPACK_MARKERS), max_size=24).map(bytes)
bodies = (
    st.binary(max_size=64)
    | msgpackish
    | st.tuples(json_values, st.sampled_from(["json", "msgpack"])).map(lambda v: encoded(*v))
    | st.tuples(
        st.lists(payloads, min_size=1, max_size=3), st.sampled_from(["json", "msgpack"])
    ).map(lambda v: encoded(*v))
    | st.lists(wide_payloads, min_size=1, max_size=3).map(lambda v: encoded(v, "json"))
)


# --- decoding ---


@QUICK
@given(body=st.binary(max_size=256) | msgpackish, content_type=st.sampled_from(CONTENT_TYPES))
def test_decoding_arbitrary_bytes_yields_elements_or_a_decode_error_and_nothing_else(
    body: bytes, content_type: str | None
) -> None:
    try:
        events = decode_body(body, content_type)
    except (DecodeError, InvalidEvent):
        return
    assert isinstance(events, list)
    assert events


@SETTINGS
@given(
    value=json_values | st.lists(payloads, max_size=3),
    how=st.sampled_from(["json", "msgpack"]),
    announced=st.booleans(),
)
def test_a_json_or_msgpack_body_decodes_to_its_elements_or_is_empty_and_invalid(
    value: Any, how: str, announced: bool
) -> None:
    content_type = (
        ("application/json" if how == "json" else "application/msgpack") if announced else None
    )
    body = encoded(value, how)
    expected = value if isinstance(value, list) else [value]
    if expected:
        assert decode_body(body, content_type) == expected
    else:
        with pytest.raises(InvalidEvent):
            decode_body(body, content_type)


@pytest.mark.parametrize("content_type", CONTENT_TYPES[:2])
@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
    ids=["nested-array", "nested-in-object"],
)
def test_deeply_nested_json_is_a_decode_error_not_a_crash(
    body: bytes, content_type: str | None
) -> None:
    with pytest.raises((DecodeError, InvalidEvent)):
        decode_body(body, content_type)


@pytest.mark.parametrize("content_type", [None, "application/msgpack"])
@pytest.mark.parametrize(
    "body",
    [b"\x81\x91\x01\x01", b"\x81\x80\x01", b"\x91\x81\x92\x01\x02\x03"],
    ids=["array-key", "map-key", "array-key-in-batch"],
)
def test_a_msgpack_map_with_an_unhashable_key_is_a_decode_error_not_a_crash(
    body: bytes, content_type: str | None
) -> None:
    with pytest.raises((DecodeError, InvalidEvent)):
        decode_body(body, content_type)


# --- routing ---


@SETTINGS
@given(topic=topics, payload=payloads | wide_payloads | json_values)
def test_routing_any_topic_and_payload_never_raises_and_names_a_configured_class(
    config: Config, topic: str, payload: Any
) -> None:
    routed = Router.from_config(config).route(topic, payload)
    if routed is not None:
        assert routed.cls in config.classes
        assert routed.key is None or isinstance(routed.key, str)


@SETTINGS
@given(user=st.text(min_size=1, max_size=8).filter(lambda t: "/" not in t))
def test_every_music_action_of_a_user_is_routed_to_the_lake_by_user(
    config: Config, user: str
) -> None:
    router = Router.from_config(config)
    for action in ACTIONS[:-1]:
        routed = router.route(f"music/{user}/events", {"action": action, "user_id": 7})
        assert routed is not None
        assert (routed.cls, routed.key) == ("music.interactions", "7")
    assert router.route(f"music/{user}/events", {"action": "create_playlist", "user_id": 7}) is None


# --- every message accounted for ---


class RecordingTransport:
    """What Ingest needs of a Transport: `write`, recorded instead of written."""

    def __init__(self) -> None:
        self.entries: list[Outgoing] = []
        self.kept: list[tuple[str, Fields]] = []

    async def write(
        self, items: Sequence[Outgoing], extra: Sequence[tuple[str, Fields]] = ()
    ) -> Written:
        self.entries.extend(items)
        self.kept.extend(extra)
        return Written([f"{n + 1}-0".encode() for n in range(len(items))], [None] * len(extra))


def ingest_for(config: Config) -> tuple[Ingest, RecordingTransport, Metrics]:
    transport = RecordingTransport()
    metrics = Metrics(CollectorRegistry())
    clock = SystemClock()
    addresser = Addresser(config, Router.from_config(config), clock)
    ingest = Ingest(config, addresser, cast("Transport", transport), metrics, clock)
    return ingest, transport, metrics


def expected_events(body: bytes) -> int:
    """Events in a message as ingest should count them: a body that is not events is one."""
    try:
        return len(decode_body(body, content_type=None))
    except (DecodeError, InvalidEvent):
        return 1


@SETTINGS
@given(
    messages=st.lists(st.tuples(topics, bodies), min_size=1, max_size=6),
    max_event_bytes=st.sampled_from([65_536, 120]),
)
def test_every_message_is_routed_into_a_class_or_kept_with_a_reason(
    config: Config, messages: list[tuple[str, bytes]], max_event_bytes: int
) -> None:
    config = config.model_copy(
        update={"service": config.service.model_copy(update={"max_event_bytes": max_event_bytes})}
    )
    ingest, transport, metrics = ingest_for(config)

    kept_messages = asyncio.run(ingest.accept_messages(messages, "mqtt"))

    # every event (or undecodable message) is in exactly one place
    assert len(transport.entries) + len(transport.kept) == sum(
        expected_events(body) for _, body in messages
    )
    for item in transport.entries:
        assert item.cls in config.classes
        envelope = Envelope.decode(item.data)
        assert envelope.cls == item.cls
        assert len(item.data) <= max_event_bytes
    reasons = [str(fields["reason"]) for _, fields in transport.kept]
    assert set(reasons) <= {"decode_error", "invalid", "too_large", "unrouted"}  # no bug
    for stream, fields in transport.kept:
        wanted = keys.unrouted() if fields["reason"] == "unrouted" else keys.rejected()
        assert stream == wanted
    for reason in set(reasons):
        counted = metrics.registry.get_sample_value(
            "switchyard_events_rejected_total", {"reason": reason}
        )
        assert counted == reasons.count(reason)
    # and the return value counts the messages that had anything kept aside
    one_by_one = 0
    for message in messages:
        alone, _, _ = ingest_for(config)
        one_by_one += asyncio.run(alone.accept_messages([message], "mqtt"))
    assert kept_messages == one_by_one
    assert 0 <= kept_messages <= len(messages)
    assert (kept_messages == 0) == (not transport.kept)


@pytest.mark.parametrize(
    "timestamp",
    [
        b"1e400",  # JSON reads it as infinity
        b"-1e400",
        b"18446744073709551615",  # the largest integer msgpack stores
        b'"0001-01-01T00:00:00+14:00"',  # before year 1 in UTC
        b'"9999-12-31T23:59:59-14:00"',  # after year 9999 in UTC
    ],
)
def test_an_illegible_timestamp_leaves_the_event_unstamped_not_refused_nor_raised(
    config: Config, timestamp: bytes
) -> None:
    ingest, transport, _ = ingest_for(config)
    body = b'{"timestamp": ' + timestamp + b"}"

    kept = asyncio.run(ingest.accept_messages([("doorbell/d1/button_press", body)], "mqtt"))

    assert kept == 0
    [item] = transport.entries
    envelope = Envelope.decode(item.data)
    assert envelope.cls == "doorbell.button_press"
    assert envelope.source_ts is None or math.isfinite(envelope.source_ts)


@pytest.mark.parametrize("number", [b"1" + b"0" * 30, b"-1" + b"0" * 30])
def test_an_event_holding_an_integer_msgpack_cannot_store_is_kept_as_invalid(
    config: Config, number: bytes
) -> None:
    ingest, transport, _ = ingest_for(config)
    bodies = [
        b'{"n": ' + number + b"}",  # routed: its envelope cannot be encoded
        b'{"n": ' + number + b', "timestamp": ' + number + b"}",
    ]
    messages = [("doorbell/d1/button_press", body) for body in bodies]
    messages.append(("nowhere/at/all", bodies[0]))  # unrouted: its payload cannot be packed

    kept = asyncio.run(ingest.accept_messages(messages, "mqtt"))

    assert kept == 3
    assert transport.entries == []
    assert [fields["reason"] for _, fields in transport.kept] == ["invalid"] * 3
