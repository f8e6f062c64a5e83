"""Config loading: typed models, interpolation, and errors that name the YAML path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import Config, load_config, parse_config
from router.errors import ConfigError

MINIMAL = """\
lanes:
  - name: high
  - name: low
routes:
  - topic: doorbell/+/button_press
    class: doorbell.button_press
    key: topic.1
classes:
  doorbell.button_press:
    lane: high
    actor: actors.builtin:Log
"""


def issues_of(
    text: str, environ: dict[str, str] | None = None
) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", environ or {})
    return [(issue.line, issue.path, issue.message) for issue in caught.value.issues]


def test_a_minimal_file_gets_sensible_defaults() -> None:
    config = parse_config(MINIMAL, environ={})
    assert config.redis.url == "embedded"
    assert config.http.port == 8080
    assert config.classes["doorbell.button_press"].mode == "queue"
    assert config.lane_names() == ["high", "low"]


def test_an_unknown_key_is_refused_with_its_path_and_line() -> None:
    text = MINIMAL.replace("    lane: high\n", "    lane: high\n    concurency: 4\n")
    assert issues_of(text) == [(11, "classes.doorbell.button_press.concurency", "unknown key")]


def test_every_error_is_reported_not_just_the_first() -> None:
    text = MINIMAL.replace("lane: high", "lane: urgent").replace("- name: low", "- name: high")
    found = issues_of(text)
    assert (3, "lanes[1].name", "lane 'high' is listed twice") in found
    assert any(
        path == "classes.doorbell.button_press.lane" and line == 10 for line, path, _ in found
    )


def test_type_errors_name_the_line_of_the_bad_value() -> None:
    text = MINIMAL + "    concurrency: lots\n"
    ((line, path, message),) = issues_of(text)
    assert (line, path) == (12, "classes.doorbell.button_press.concurrency")
    assert "integer" in message


def test_environment_variables_are_interpolated_with_defaults() -> None:
    text = MINIMAL + "redis:\n  url: ${SY_REDIS:-embedded}\nhttp:\n  port: ${SY_PORT:-8080}\n"
    assert parse_config(text, environ={}).http.port == 8080
    config = parse_config(text, environ={"SY_REDIS": "redis://cache:6379/0", "SY_PORT": "9000"})
    assert config.redis.url == "redis://cache:6379/0"
    assert config.http.port == 9000


def test_a_variable_without_default_must_be_set() -> None:
    text = MINIMAL + "redis:\n  url: ${SY_REDIS}\n"
    assert (13, "redis.url", "environment variable SY_REDIS is not set") in issues_of(text)


def test_a_route_to_a_class_that_does_not_exist_is_refused() -> None:
    text = MINIMAL.replace("class: doorbell.button_press", "class: doorbell.press")
    assert issues_of(text) == [
        (6, "routes[0].class", "routes to 'doorbell.press', which is not a class in 'classes'")
    ]


def test_a_class_template_must_be_pinned_so_every_target_is_known() -> None:
    text = MINIMAL.replace("class: doorbell.button_press", "class: doorbell.{topic.2}").replace(
        "topic: doorbell/+/button_press", "topic: doorbell/+/+"
    )
    ((line, path, message),) = issues_of(text)
    assert (line, path) == (6, "routes[0].class")
    assert "must be pinned" in message


def test_a_pinned_template_expands_to_every_class_it_can_produce() -> None:
    text = MINIMAL.replace("class: doorbell.button_press", "class: doorbell.{topic.2}").replace(
        "topic: doorbell/+/button_press",
        "topic: doorbell/+/+\n    match:\n      topic.2: {in: [button_press, chime]}",
    )
    assert issues_of(text) == [
        (8, "routes[0].class", "routes to 'doorbell.chime', which is not a class in 'classes'")
    ]


def test_a_bad_topic_filter_is_refused() -> None:
    text = MINIMAL.replace("doorbell/+/button_press", "doorbell/#/button_press")
    ((line, path, message),) = issues_of(text)
    assert (line, path) == (5, "routes[0].topic")
    assert "'#' must be the whole last level" in message


def test_a_match_needs_exactly_one_condition() -> None:
    text = MINIMAL.replace("    key: topic.1\n", "    key: topic.1\n    match:\n      kind: {}\n")
    ((line, path, message),) = issues_of(text)
    assert (line, path) == (9, "routes[0].match.kind")
    assert "exactly one of" in message


def test_batch_settings_need_batch_mode() -> None:
    text = MINIMAL + "    batch: {max_size: 10}\n"
    assert issues_of(text) == [
        (12, "classes.doorbell.button_press.batch", "'batch' settings need mode: batch")
    ]


def test_yaml_syntax_errors_name_the_line() -> None:
    ((line, path, message),) = issues_of(MINIMAL + "  oops: [unclosed\n")
    assert line is not None
    assert line >= 12
    assert path == ""
    assert message.startswith("not valid YAML")


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "nope.yaml")


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("service: {log_format: json}  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text: byte 34"):
        load_config(path)


def test_the_default_config_covers_the_three_workloads() -> None:
    config = load_config(Path(__file__).parent.parent / "config.yaml", environ={})
    assert isinstance(config, Config)
    assert {name.split(".")[0] for name in config.classes} == {"music", "doorbell", "clinic"}
    assert config.redis.url == "embedded"
    assert config.http.port == 8080
    modes = {name: cls.mode for name, cls in config.classes.items()}
    assert modes["clinic.arrival"] == "batch"
    assert modes["clinic.registration"] == "queue"
    assert modes["clinic.vaccination"] == "stream"
    assert modes["doorbell.reading"] == "batch"
    assert config.classes["doorbell.button_press"].lane == "high"
