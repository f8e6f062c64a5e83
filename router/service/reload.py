"""A reload: what a new config file changes, and whether a running process can take it live.

Taken live, as one step between two requests: the routes; each class's concurrency, batch,
retry, SLA, shedding, timeout and delivery settings; new classes of modes that share their
partitions (queue and batch); removed classes that hold nothing any more. Refused, with the
reason, and the process keeps its file: any other section (service, redis, mqtt, http,
lanes, ...), a class's mode, lane, partitions, actor or options, a new stream-mode class, and
a removed class that still holds events. Classes run by lane workers take a change when
their lane's workers drain and start again on the new file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from router.errors import ActorLoadError, ConfigError, ConfigIssue
from router.ops.analytics import load_analytics
from router.runtime.loader import load_actor

if TYPE_CHECKING:
    from collections.abc import Mapping

    from router.config import ClassConfig, Config
    from router.streams.transport import StreamStats

FIXED_SECTIONS = ("service", "redis", "http", "mqtt", "lanes", "fleet", "media", "notify",
                  "analytics")  # fmt: skip
FIXED_SETTINGS = ("mode", "lane", "partitions", "actor", "options", "max_len")


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload did: applied or not, what changed, why not, and the config running now."""

    applied: bool
    changed: str
    issues: list[str]
    hash: str
    generation: int

    def as_json(self) -> dict[str, object]:
        return {
            "applied": self.applied, "changed": self.changed, "issues": self.issues,
            "config": {"hash": self.hash, "generation": self.generation},
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """What a reload does."""

    routes: bool = False
    changed: dict[str, ClassConfig] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.routes or self.changed or self.added or self.removed)

    def said(self) -> str:
        parts = ["routes" if self.routes else "", *(f"~{n}" for n in self.changed),
                 *(f"+{n}" for n in self.added), *(f"-{n}" for n in self.removed)]  # fmt: skip
        return ", ".join(p for p in parts if p) or "nothing"


def plan(old: Config, new: Config, held: Mapping[str, StreamStats]) -> Plan | list[ConfigIssue]:
    """The plan to go from `old` to `new`, or why it cannot be done live. `held`: each
    class's stream figures now."""
    issues = [
        _issue(new, (section,), "changes need a restart: the running file is kept")
        for section in FIXED_SECTIONS
        if _dumped(getattr(old, section)) != _dumped(getattr(new, section))
    ]
    changed: dict[str, ClassConfig] = {}
    for name, cls in new.classes.items():
        before = old.classes.get(name)
        if before is None or before == cls:
            continue
        fixed = [
            s for s in FIXED_SETTINGS if _dumped(getattr(before, s)) != _dumped(getattr(cls, s))
        ]
        if fixed:
            why = f"{', '.join(fixed)} cannot change live: restart to apply"
            issues.append(_issue(new, ("classes", name, fixed[0]), why))
        else:
            changed[name] = cls
    added = [name for name in new.classes if name not in old.classes]
    for name in added:
        if new.classes[name].ordered:
            issues.append(_issue(new, ("classes", name, "mode"),
                                 "a new stream-mode class needs a restart (its partitions' "
                                 "leases are shared out at start)"))  # fmt: skip
    removed = [name for name in old.classes if name not in new.classes]
    for name in removed:
        figures = held.get(name)
        left = 0 if figures is None else figures.backlog + figures.pending + figures.delayed
        if left:
            issues.append(_issue(new, ("classes",), f"{name} still holds {left} event(s): "
                                 "removed only once it is empty"))  # fmt: skip
    if issues:
        return issues
    routes = _dumped(old.routes) != _dumped(new.routes)
    return Plan(routes, changed, added, removed)


def _dumped(value: object) -> str:
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return json.dumps(dump(mode="json", by_alias=True), sort_keys=True)
    if isinstance(value, dict):
        return json.dumps({key: _dumped(item) for key, item in value.items()}, sort_keys=True)
    if isinstance(value, list | tuple):
        return json.dumps([_dumped(item) for item in value])
    return json.dumps(value, sort_keys=True, default=str)


def _issue(config: Config, path: tuple[str | int, ...], message: str) -> ConfigIssue:
    return ConfigIssue(".".join(str(p) for p in path), config.line_of(path), message)


def check_actors(config: Config) -> None:
    """Import every actor and analytics provider and build it with its options, so a typo
    fails here, not at 3 a.m."""
    issues = []
    for name, cls in config.classes.items():
        try:
            load_actor(cls.actor, cls.options)
        except ActorLoadError as exc:
            path = ("classes", name, "actor")
            issues.append(ConfigIssue(f"classes.{name}.actor", config.line_of(path), exc.reason))
    for workload, settings in config.analytics.items():
        try:
            load_analytics(settings)
        except (ImportError, TypeError, ValueError) as exc:
            path = ("analytics", workload, "provider")
            where = f"analytics.{workload}.provider"
            issues.append(ConfigIssue(where, config.line_of(path), f"{settings.provider}: {exc}"))
    if issues:
        raise ConfigError(config.source, issues)
