"""Routing: MQTT topic filters, payload conditions, class templates, keys; first match wins."""

from __future__ import annotations

from typing import Any

import pytest

from router.config import parse_config
from router.config.syntax import parse_ref, validate_topic_filter
from router.routing.rules import Router, topic_matches

CONFIG = """\
lanes: [{name: high}, {name: low}]
routes:
  - name: music
    topic: music/+/events
    match:
      action: {in: [like_song, skip_song]}
      user_id: {exists: true}
    class: music.{action}
    key: user_id
  - name: vip-doorbell
    topic: doorbell/+/button_press
    match:
      device.tier: {equals: vip}
    class: doorbell.vip
    key: topic.1
  - name: doorbell
    topic: doorbell/#
    class: doorbell.other
    key: payload.device.id
classes:
  music.like_song: {lane: low, actor: "actors.builtin:Log"}
  music.skip_song: {lane: low, actor: "actors.builtin:Log"}
  doorbell.vip: {lane: high, actor: "actors.builtin:Log"}
  doorbell.other: {lane: low, actor: "actors.builtin:Log"}
"""


@pytest.fixture
def router() -> Router:
    return Router.from_config(parse_config(CONFIG, environ={}))


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "anything/at/all", True),
        ("a/+/c", "a/b/d", False),
        ("a/b", "a", False),
    ],
)
def test_topic_filters_match_like_mqtt(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter.split("/"), topic.split("/")) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a/+b"])
def test_malformed_topic_filters_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"topic filter|must be"):
        validate_topic_filter(bad)


def test_the_class_template_takes_the_action_and_the_key_the_user(router: Router) -> None:
    routed = router.route("music/10/events", {"user_id": 10, "action": "skip_song"})
    assert routed is not None
    assert (routed.cls, routed.key, routed.rule) == ("music.skip_song", "10", "music")


def test_an_action_outside_the_list_is_not_routed(router: Router) -> None:
    assert router.route("music/10/events", {"user_id": 10, "action": "dance"}) is None


def test_a_missing_required_field_is_not_routed(router: Router) -> None:
    assert router.route("music/10/events", {"action": "like_song"}) is None


def test_the_first_matching_rule_wins(router: Router) -> None:
    vip = router.route("doorbell/front/button_press", {"device": {"tier": "vip", "id": "x"}})
    other = router.route("doorbell/front/button_press", {"device": {"tier": "basic", "id": "x"}})
    assert vip is not None
    assert other is not None
    assert (vip.cls, vip.key) == ("doorbell.vip", "front")
    assert (other.cls, other.key) == ("doorbell.other", "x")


@pytest.mark.parametrize("payload", [None, 42, "text", [1, 2], {"device": "flat"}])
def test_payloads_of_any_shape_route_by_topic_without_errors(router: Router, payload: Any) -> None:
    routed = router.route("doorbell/front/temperature", payload)
    assert routed is not None
    assert routed.cls == "doorbell.other"
    assert routed.key is None


def test_an_unknown_topic_is_not_routed(router: Router) -> None:
    assert router.route("thermostat/1/reading", {"user_id": 1}) is None


@pytest.mark.parametrize("bad", ["topic.x", "payload.", "a..b", ""])
def test_malformed_references_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"reference|topic level"):
        parse_ref(bad)


def test_a_topic_that_alone_decides_the_class_still_keys_each_event_by_its_payload(
    router: Router,
) -> None:
    """A batch looks a topic's routes up once; the class is then fixed, the key is not."""
    routes = router.for_topic("doorbell/front/temperature")
    assert routes.fixed is not None
    first = routes.route({"device": {"id": "a"}}, router.classes)
    second = routes.route({"device": {"id": "b"}}, router.classes)
    assert first is not None
    assert second is not None
    assert (first.cls, first.key, second.cls, second.key) == (
        "doorbell.other", "a", "doorbell.other", "b"
    )  # fmt: skip


def test_a_rule_with_conditions_first_leaves_the_class_to_each_event(router: Router) -> None:
    routes = router.for_topic("doorbell/front/button_press")
    assert routes.fixed is None
    vip = routes.route({"device": {"tier": "vip"}}, router.classes)
    other = routes.route({"device": {"tier": "basic"}}, router.classes)
    assert vip is not None
    assert other is not None
    assert (vip.cls, other.cls) == ("doorbell.vip", "doorbell.other")


def test_a_class_named_by_a_topic_level_is_fixed_per_topic_with_its_topic_key() -> None:
    config = """\
lanes: [{name: low}]
routes:
  - topic: sensors/temp/+
    class: sensors.{topic.1}
    key: topic.2
  - topic: sensors/#
    class: sensors.other
classes:
  sensors.temp: {lane: low, actor: "actors.builtin:Log"}
  sensors.other: {lane: low, actor: "actors.builtin:Log"}
"""
    router = Router.from_config(parse_config(config, environ={}))
    fixed = router.for_topic("sensors/temp/d7").fixed
    assert fixed is not None
    assert (fixed.cls, fixed.key) == ("sensors.temp", "d7")
    assert router.route("sensors/temp/d7", {"anything": 1}) == fixed
    other = router.route("sensors/hum/d7", {})
    assert other is not None
    assert (other.cls, other.key) == ("sensors.other", None)
