"""Routes: compiled rules that classify an event by its topic and payload; first match wins."""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping, Sequence

    from router.config import Config, FieldMatch

_MISSING = object()
_TEMPLATE_PART = re.compile(r"\{([^{}]+)\}")


# --- references: "topic.N" is a topic level, "payload.a.b" or plain "a.b" a payload field ---


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to one value of an event: a topic level or a (nested) payload field."""

    text: str
    topic_level: int | None
    field_path: tuple[str, ...]

    def resolve(self, levels: Sequence[str], payload: Any) -> Any:
        """The referenced value, or `_MISSING`."""
        if self.topic_level is not None:
            return levels[self.topic_level] if self.topic_level < len(levels) else _MISSING
        value = payload
        for name in self.field_path:
            if not isinstance(value, dict):  # decoded JSON and msgpack maps are dicts
                return _MISSING
            value = value.get(name, _MISSING)
            if value is _MISSING:
                return _MISSING
        return value


def parse_ref(text: str) -> Ref:
    """Parse `topic.N`, `payload.a.b` or `a.b`; raise ValueError with a reason."""
    text = text.strip()
    root, _, rest = text.partition(".")
    if root == "topic" and rest:
        if not rest.isdigit():
            raise ValueError(f"{text!r}: a topic level is written topic.<index>, e.g. topic.1")
        return Ref(text, int(rest), ())
    path = rest if root == "payload" else text
    parts = tuple(path.split("."))
    if not path or any(not part for part in parts):
        raise ValueError(f"{text!r} is not a field reference (write payload.field or topic.N)")
    return Ref(text, None, parts)


def validate_topic_filter(topic_filter: str) -> str:
    """Check MQTT topic filter syntax: `+` a whole level, `#` only as the whole last level."""
    if not topic_filter:
        raise ValueError("a topic filter cannot be empty")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"{topic_filter!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"{topic_filter!r}: '+' must be a whole level")
    return topic_filter


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
class Template:
    """A class name with `{ref}` placeholders, e.g. `music.{payload.action}`."""

    text: str
    literals: tuple[str, ...]
    refs: tuple[Ref, ...]

    def render(self, levels: Sequence[str], payload: Any) -> str | None:
        """The class name for this event, or None when a placeholder has no value."""
        if not self.refs:
            return self.text
        out = [self.literals[0]]
        for ref, literal in zip(self.refs, self.literals[1:], strict=True):
            value = ref.resolve(levels, payload)
            if value is _MISSING or isinstance(value, (dict, list)):
                return None
            out.append(str(value))
            out.append(literal)
        return "".join(out)


def parse_template(text: str) -> Template:
    """Parse a class template; raise ValueError for a bad placeholder."""
    pieces = _TEMPLATE_PART.split(text)
    literals = tuple(pieces[0::2])
    refs = tuple(parse_ref(piece) for piece in pieces[1::2])
    if any("{" in lit or "}" in lit for lit in literals):
        raise ValueError(f"{text!r}: unbalanced braces")
    return Template(text, literals, refs)


# --- compiled rules ---


@dataclass(frozen=True, slots=True)
class Condition:
    """One payload or topic condition of a rule."""

    ref: Ref
    kind: str  # "equals" | "in" | "exists"
    value: Any

    def holds(self, levels: Sequence[str], payload: Any) -> bool:
        found = self.ref.resolve(levels, payload)
        if self.kind == "exists":
            return (found is not _MISSING) is bool(self.value)
        if found is _MISSING:
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
    if value is _MISSING or value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def possible_classes(
    template: Template, filter_levels: Sequence[str], conditions: Mapping[str, FieldMatch]
) -> Iterator[str] | str:
    """Every class a templated rule can produce, or a reason why they cannot be listed.

    A placeholder must be pinned by an `in`/`equals` condition on the same reference, or point
    at a literal level of the topic filter, so that config checking can prove every class
    exists before an event arrives.
    """
    by_ref = {parse_ref(text).text.removeprefix("payload."): m for text, m in conditions.items()}
    choices: list[list[str]] = []
    for ref in template.refs:
        if ref.topic_level is not None and ref.topic_level < len(filter_levels):
            level = filter_levels[ref.topic_level]
            if level not in ("+", "#"):
                choices.append([level])
                continue
        match = by_ref.get(ref.text.removeprefix("payload."))
        options = match.options() if match is not None else None
        if options is None:
            return (
                f"placeholder {{{ref.text}}} must be pinned by a match on {ref.text} "
                "with 'in' or 'equals', so that every class it can produce is known"
            )
        choices.append([str(option) for option in options])
    return (
        "".join(
            itertools.chain.from_iterable(
                itertools.zip_longest(template.literals, combo, fillvalue="")
            )
        )
        for combo in itertools.product(*choices)
    )
