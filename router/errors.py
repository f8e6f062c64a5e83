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
    """An event that cannot be taken: not an object, a value that cannot be stored, or (kind
    `internal_error`) a failure of Switchyard's own while ingesting it."""

    def __init__(self, reason: str, kind: str = "invalid") -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(reason)


class RefusedEvents(SwitchyardError):
    """Events of one request that cannot be taken, by index; the request is refused whole."""

    def __init__(self, problems: list[tuple[int, InvalidEvent | EventTooLarge]]) -> None:
        self.problems = problems
        first = problems[0][1]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{first}{more}")

    @property
    def kinds(self) -> set[str]:
        """The reasons, as counted: invalid, too_large, internal_error."""
        return {kind_of(exc) for _, exc in self.problems}


class WriteRefused(SwitchyardError):
    """Redis refused some events of a request for a reason other than being away (a class
    stream key of the wrong type, say); the others were written."""

    def __init__(self, refused: list[tuple[str, int]], error: Exception) -> None:
        self.refused = refused  # (event id, index in the request)
        self.error = error
        super().__init__(f"redis refused {len(refused)} event(s): {error}")


def kind_of(exc: InvalidEvent | EventTooLarge) -> str:
    return exc.kind if isinstance(exc, InvalidEvent) else "too_large"


class EventTooLarge(SwitchyardError):
    """An event over `max_event_bytes`, a batch over `max_batch_events`, or (with `size` None)
    a body over `max_body_bytes`, noticed while it was read."""

    def __init__(
        self, size: int | None, limit: int, index: int = 0, *, batch: bool = False
    ) -> None:
        self.size = size
        self.limit = limit
        self.index = index
        if size is None:
            super().__init__(f"the body is over the limit of {limit} bytes")
        elif batch:
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


class PermanentFailure(SwitchyardError):
    """Raised by an actor (or passed to `ctx.fail`) for an event that can never succeed, such
    as one with invalid data: it goes straight to the dead letters with this reason, without
    retries."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


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
