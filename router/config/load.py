"""Loading a config file: YAML with `${VAR:-default}` interpolation, validated into the
models, and every error located by its YAML path and line."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from router import redaction
from router.config.models import CLASS_NAME, Config, RouteConfig, YamlPath, line_of
from router.config.syntax import parse_template, possible_classes
from router.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError listing every problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(source, [ConfigIssue("", None, f"cannot read file: {exc}")]) from exc
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text: byte {exc.start} cannot be read"
        raise ConfigError(source, [ConfigIssue("", None, why)]) from None
    config = parse_config(text, source, os.environ if environ is None else environ)
    config._file_digest = hashlib.sha256(raw).digest()
    return config


def parse_config(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate config text; raise ConfigError listing every problem with its YAML path and line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(
            source, [ConfigIssue("", line, f"not valid YAML: {exc.problem}")]
        ) from exc
    lines = dict(_node_lines(root, ())) if root is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("", 1, "the file must be a mapping of sections")])

    issues: list[ConfigIssue] = []
    data = _interpolate(data, (), os.environ if environ is None else environ, lines, issues)
    _read_secret_files(data, lines, issues)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            issues.append(ConfigIssue(_dotted(loc), line_of(lines, loc), _message(error)))
        raise ConfigError(source, issues) from None
    config._lines = lines
    config._source = source
    issues.extend(
        ConfigIssue(_dotted(p), line_of(lines, p), msg) for p, msg in _cross_check(config)
    )
    if issues:
        raise ConfigError(source, issues)
    remember_secrets(config)
    return config


# (section, setting, what it fills): a secret read from a file, as Kubernetes mounts Secrets
SECRET_FILES = (
    ("redis", "password_file", "password"),
    ("mqtt", "password_file", "password"),
    ("notify", "webhook_secret_file", "webhook_secret"),
)


def _read_secret_files(
    data: dict[str, Any], lines: Mapping[YamlPath, int], issues: list[ConfigIssue]
) -> None:
    """Each `*_file` secret setting replaced by the secret its file holds."""
    for section, setting, target in SECRET_FILES:
        values = data.get(section)
        if not isinstance(values, dict) or setting not in values:
            continue
        path = values.pop(setting)
        where = (section, setting)
        try:
            secret = Path(str(path)).read_text(encoding="utf-8").strip()
        except OSError as exc:
            issues.append(ConfigIssue(_dotted(where), line_of(lines, where),
                                      f"cannot read {path}: {exc.strerror}"))  # fmt: skip
            continue
        if not secret:
            issues.append(ConfigIssue(_dotted(where), line_of(lines, where), f"{path} is empty"))
            continue
        values[target] = secret


def remember_secrets(config: Config) -> None:
    """Every secret the config holds, kept out of logs, command output and views."""
    redaction.remember_url(config.redis.url)
    redaction.remember_url(config.mqtt.url)
    redaction.remember(config.redis.password, config.mqtt.password, config.notify.webhook_secret)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _cross_check(config: Config) -> Iterator[tuple[YamlPath, str]]:
    """Checks that span sections: lanes, class names, batch settings, route targets."""
    lanes = config.lane_names()
    for index, name in enumerate(lanes):
        if name in lanes[:index]:
            yield ("lanes", index, "name"), f"lane {name!r} is listed twice"
    if sum(lane.min_share for lane in config.lanes) > 1:
        yield ("lanes",), "the lanes' min_share values add up to more than 1"
    used = {cls.lane for cls in config.classes.values()}
    for index, lane in enumerate(config.lanes):
        if lane.workers and lane.name not in used:
            yield ("lanes", index, "workers"), f"lane {lane.name!r} has workers but no classes"
    for name, cls in config.classes.items():
        if not CLASS_NAME.match(name):
            yield (
                ("classes", name),
                (
                    "class names use lower-case letters, digits, '.', '_' and '-', "
                    "and start with a letter or digit"
                ),
            )
        if cls.lane not in lanes:
            yield (
                ("classes", name, "lane"),
                f"unknown lane {cls.lane!r} (lanes: {', '.join(lanes)})",
            )
        if cls.batch is not None and cls.mode != "batch":
            yield ("classes", name, "batch"), "'batch' settings need mode: batch"
    for index, route in enumerate(config.routes):
        yield from _check_route_targets(config, index, route)
    if config.mqtt.enabled and not config.mqtt.subscriptions:
        yield ("mqtt", "subscriptions"), "MQTT is on but subscribes to nothing"


def _check_route_targets(
    config: Config, index: int, route: RouteConfig
) -> Iterator[tuple[YamlPath, str]]:
    template = parse_template(route.class_)
    pinned = {ref: match.options() for ref, match in route.match.items()}
    produced = possible_classes(template, route.topic.split("/"), pinned)
    if isinstance(produced, str):
        yield ("routes", index, "class"), produced
        return
    for cls in produced:
        if cls not in config.classes:
            yield (
                ("routes", index, "class"),
                f"routes to {cls!r}, which is not a class in 'classes'",
            )


def _interpolate(
    value: Any,
    path: YamlPath,
    environ: Mapping[str, str],
    lines: dict[YamlPath, int],
    issues: list[ConfigIssue],
) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string value."""
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), environ, lines, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), environ, lines, issues) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if found:
            return found
        if default is not None:
            return default
        issues.append(
            ConfigIssue(
                _dotted(path), line_of(lines, path), f"environment variable {name} is not set"
            )
        )
        return ""

    return _ENV_REF.sub(substitute, value)


def _node_lines(node: yaml.Node, path: YamlPath) -> Iterator[tuple[YamlPath, int]]:
    """(path, 1-based line) for every node of a composed YAML document."""
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            yield (*path, key), key_node.start_mark.line + 1
            for sub_path, line in _node_lines(value_node, (*path, key)):
                if sub_path != (*path, key):
                    yield sub_path, line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _node_lines(item, (*path, index))


def _dotted(path: YamlPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
