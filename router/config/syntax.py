"""What a route may say: references to an event's values, class templates, and MQTT topic
filters. Pure syntax, checked when the config is loaded and compiled into rules later."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

MISSING = object()
_TEMPLATE_PART = re.compile(r"\{([^{}]+)\}")


# --- references: "topic.N" is a topic level, "payload.a.b" or plain "a.b" a payload field ---


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to one value of an event: a topic level or a (nested) payload field."""

    text: str
    topic_level: int | None
    field_path: tuple[str, ...]

    def resolve(self, levels: Sequence[str], payload: Any) -> Any:
        """The referenced value, or `MISSING`."""
        if self.topic_level is not None:
            return levels[self.topic_level] if self.topic_level < len(levels) else MISSING
        value = payload
        for name in self.field_path:
            if not isinstance(value, dict):  # decoded JSON and msgpack maps are dicts
                return MISSING
            value = value.get(name, MISSING)
            if value is MISSING:
                return MISSING
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
            if value is MISSING or isinstance(value, (dict, list)):
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


def possible_classes(
    template: Template, filter_levels: Sequence[str], pinned: Mapping[str, list[Any] | None]
) -> Iterator[str] | str:
    """Every class a templated rule can produce, or a reason why they cannot be listed.

    `pinned` holds, per `match:` reference, the values its condition allows (None when it
    does not pin them). A placeholder must be pinned by an `in`/`equals` condition on the
    same reference, or point
    at a literal level of the topic filter, so that config checking can prove every class
    exists before an event arrives.
    """
    by_ref = {parse_ref(text).text.removeprefix("payload."): o for text, o in pinned.items()}
    choices: list[list[str]] = []
    for ref in template.refs:
        if ref.topic_level is not None and ref.topic_level < len(filter_levels):
            level = filter_levels[ref.topic_level]
            if level not in ("+", "#"):
                choices.append([level])
                continue
        options = by_ref.get(ref.text.removeprefix("payload."))
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
