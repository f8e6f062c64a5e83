"""Routes: compiled rules that classify an event by its topic and payload; first match wins."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from router.config.syntax import MISSING, parse_ref, parse_template

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from router.config import Config, FieldMatch
    from router.config.syntax import Ref, Template


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


class Routed(NamedTuple):
    """Where an event goes: its class and its ordering key. (A tuple: one is made for nearly
    every event that arrives.)"""

    cls: str
    key: str | None
    rule: str


@dataclass(frozen=True, slots=True)
class TopicRoutes:
    """What one topic's events are routed by, worked out once per topic: its levels, the
    rules whose filter it matches (in order), and `fixed`, where the topic alone decides the
    class: the first of those rules has no conditions and names its class by topic levels
    only. Then only the key, if the rule takes one from the payload, is left per event."""

    topic: str
    levels: tuple[str, ...]
    rules: tuple[Rule, ...]
    fixed: Routed | None
    payload_key: Ref | None = None  # with `fixed`: the key each event still brings

    def route(self, payload: Any, classes: Collection[str]) -> Routed | None:
        fixed = self.fixed
        if fixed is not None:
            if self.payload_key is None:
                return fixed
            return Routed(fixed.cls, _key_of(self.payload_key, self.levels, payload), fixed.rule)
        levels = self.levels
        for rule in self.rules:
            if rule.conditions and not all(c.holds(levels, payload) for c in rule.conditions):
                continue
            cls = rule.template.render(levels, payload)
            if cls is None or cls not in classes:
                continue
            return Routed(cls, _key_of(rule.key, levels, payload), rule.name)
        return None


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
        # A topic's routes (`TopicRoutes`), worked out once per topic and shared by a batch of
        # its events. Bounded, since device fleets bring topics without end (doorbell/<id>/...).
        self.for_topic = functools.lru_cache(maxsize=self.TOPIC_CACHE_SIZE)(self._rules_for)

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
        return self.for_topic(topic).route(payload, self.classes)

    def _rules_for(self, topic: str) -> TopicRoutes:
        """The topic's levels and the rules whose topic filter it matches, in order; a rule
        that names a missing class by topic levels alone can never match here, and is left
        out."""
        levels = tuple(topic.split("/"))
        rules = []
        for rule in self.rules:
            if not topic_matches(rule.filter_levels, levels):
                continue
            if _by_topic(rule.template) and rule.template.render(levels, None) not in self.classes:
                continue
            rules.append(rule)
        first = rules[0] if rules else None
        if first is None or first.conditions or not _by_topic(first.template):
            return TopicRoutes(topic, levels, tuple(rules), None)
        cls = first.template.render(levels, None)
        assert cls is not None  # kept above only when it names an existing class
        fixed = Routed(cls, _key_of(first.key, levels, None), first.name)
        by_payload = first.key if first.key and first.key.topic_level is None else None
        return TopicRoutes(topic, levels, tuple(rules), fixed, by_payload)


def _by_topic(template: Template) -> bool:
    """Whether a class template names its class by topic levels alone (or by no reference)."""
    return all(ref.topic_level is not None for ref in template.refs)


def _key_of(ref: Ref | None, levels: Sequence[str], payload: Any) -> str | None:
    if ref is None:
        return None
    value = ref.resolve(levels, payload)
    if value is MISSING or value is None or isinstance(value, (dict, list)):
        return None
    return str(value)
