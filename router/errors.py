"""The one tree of Switchyard exceptions; each carries its context as attributes."""

from __future__ import annotations

from dataclasses import dataclass


class SwitchyardError(Exception):
    """Base of every error Switchyard raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file, located by YAML path and line."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "line ?"
        return f"{where}: {self.path or '<root>'}: {self.message}"


class ConfigError(SwitchyardError):
    """A config file that cannot be used; lists every problem found, not just the first."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} error(s)\n{lines}")


class DecodeError(SwitchyardError):
    """Bytes that are not a valid event body or envelope."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InvalidEvent(SwitchyardError):
    """A decoded body whose shape is not an event (for example a list of numbers)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class EventTooLarge(SwitchyardError):
    """An event over `max_event_bytes`."""

    def __init__(self, size: int, limit: int, index: int = 0, *, batch: bool = False) -> None:
        self.size = size
        self.limit = limit
        self.index = index
        if batch:
            super().__init__(f"{size} events, over the batch limit of {limit}")
        else:
            super().__init__(f"event {index} is {size} bytes, over the limit of {limit}")


class PoisonEntry(SwitchyardError):
    """An entry delivered more often than `max_deliveries`: it keeps crashing its consumer."""

    def __init__(self, delivered: int, max_deliveries: int) -> None:
        self.delivered = delivered
        self.max_deliveries = max_deliveries
        super().__init__(f"delivered {delivered} times, over max_deliveries={max_deliveries}")


class ClassOverloaded(SwitchyardError):
    """A class past its shedding bound refuses new events for now (HTTP 503, MQTT held)."""

    def __init__(self, cls: str, reason: str) -> None:
        self.cls = cls
        self.reason = reason
        super().__init__(f"class {cls} is overloaded ({reason}); retry later")


class UnknownTarget(SwitchyardError):
    """An emit aimed at something that is neither a class nor a routable topic."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"{target!r} is neither an event class nor a topic any route matches")


class ActorLoadError(SwitchyardError):
    """An actor import path that does not resolve to a usable actor class."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot load actor {path!r}: {reason}")


class EmbeddedServerError(SwitchyardError):
    """An embedded server (redis-server) that could not be found or started."""
