"""Routes: compiled rules that classify an event by its topic and payload; first match wins."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.config.syntax import MISSING, Ref, Template, parse_ref, parse_template

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from router.config import Config, FieldMatch


def topic_matches(filter_levels: Sequence[str], topic_levels: Sequence[str]) -> bool:
    """MQTT matching of a split topic against a split filter."""
    for index, wanted in enumerate(filter_levels):
        if wanted == "#":
            return True
        if index >= len(topic_levels):
            return False
        if wanted not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


@dataclass(frozen=True, slots=True)
class Condition:
    """One payload or topic condition of a rule."""

    ref: Ref
    kind: str  # "equals" | "in" | "exists"
    value: Any

    def holds(self, levels: Sequence[str], payload: Any) -> bool:
        found = self.ref.resolve(levels, payload)
        if self.kind == "exists":
            return (found is not MISSING) is bool(self.value)
        if found is MISSING:
            return False
        if self.kind == "equals":
            return same_value(found, self.value)
        return any(same_value(found, option) for option in self.value)


def same_value(found: Any, wanted: Any) -> bool:
    """Equality as a config author means it: `true` is not `1`, nor `1` `true` (Python's `==`
    says both are), and a number never equals a string."""
    if isinstance(found, bool) or isinstance(wanted, bool):
        return isinstance(found, bool) and isinstance(wanted, bool) and found is wanted
    try:
        return bool(found == wanted)
    except Exception:
        return False


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled route."""

    name: str
    filter_levels: tuple[str, ...]
    conditions: tuple[Condition, ...]
    template: Template
    key: Ref | None


@dataclass(frozen=True, slots=True)
class Routed:
    """Where an event goes: its class and its ordering key."""

    cls: str
    key: str | None
    rule: str


def condition_from(ref_text: str, match: FieldMatch) -> Condition:
    """Compile one `match:` entry (already validated by the config models)."""
    kind, value = match.condition()
    return Condition(parse_ref(ref_text), kind, value)


class Router:
    """Classifies events: the first rule whose topic filter and conditions hold, and whose class
    exists, wins. A template filled in by a value no config check could foresee (say `1.0`
    where the rule pinned `1`) names no class, so that rule does not match."""

    TOPIC_CACHE_SIZE = 4096

    def __init__(self, rules: Sequence[Rule], classes: Collection[str]) -> None:
        self.rules = tuple(rules)
        self.classes = frozenset(classes)
        # Events on one topic meet the same topic filters: match them once per topic. Bounded,
        # since device fleets bring topics without end (doorbell/<device>/...).
        self._for_topic = functools.lru_cache(maxsize=self.TOPIC_CACHE_SIZE)(self._rules_for)

    @classmethod
    def from_config(cls, config: Config) -> Router:
        rules = []
        for index, route in enumerate(config.routes):
            rules.append(
                Rule(
                    name=route.name or f"routes[{index}]",
                    filter_levels=tuple(route.topic.split("/")),
                    conditions=tuple(condition_from(r, m) for r, m in route.match.items()),
                    template=parse_template(route.class_),
                    key=parse_ref(route.key) if route.key else None,
                )
            )
        return cls(rules, config.classes)

    def route(self, topic: str, payload: Any) -> Routed | None:
        """The class and key for an event on `topic`, or None when no rule matches."""
        levels, rules = self._for_topic(topic)
        for rule in rules:
            if not all(cond.holds(levels, payload) for cond in rule.conditions):
                continue
            cls = rule.template.render(levels, payload)
            if cls is None or cls not in self.classes:
                continue
            return Routed(cls, _key_of(rule.key, levels, payload), rule.name)
        return None

    def _rules_for(self, topic: str) -> tuple[tuple[str, ...], tuple[Rule, ...]]:
        """The topic's levels and the rules whose topic filter it matches, in order."""
        levels = tuple(topic.split("/"))
        return levels, tuple(r for r in self.rules if topic_matches(r.filter_levels, levels))


def _key_of(ref: Ref | None, levels: Sequence[str], payload: Any) -> str | None:
    if ref is None:
        return None
    value = ref.resolve(levels, payload)
    if value is MISSING or value is None or isinstance(value, (dict, list)):
        return None
    return str(value)
