"""What a handler leaves for the settler: entries whose handling finished, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.errors import PermanentFailure
from router.runtime.context import NO_OUTPUTS
from router.streams.envelope import Envelope

if TYPE_CHECKING:
    from router.runtime.context import Outputs

Entry = tuple[bytes, Envelope]  # a stream entry's id and its event


@dataclass(slots=True)
class Done:
    """Entries whose handling finished, waiting for their outputs to be written and settled."""

    entry_ids: list[bytes]
    events: list[Envelope]
    outputs: Outputs
    error: BaseException | None = None
    reason: str = "handler_error"
    final: bool = False  # no retry: straight to the dead letters (expired events)
    started: float | None = None  # wall time the handler started; None if it never ran
    handler_s: float = 0.0

    @classmethod
    def failed(
        cls,
        entry_ids: list[bytes],
        events: list[Envelope],
        error: BaseException,
        started: float | None = None,
        handler_s: float = 0.0,
    ) -> Done:
        """Failed handling, without outputs: a PermanentFailure goes to the dead letters at
        once, anything else is retried."""
        permanent = isinstance(error, PermanentFailure)
        reason = "permanent" if permanent else "handler_error"
        return cls(entry_ids, events, NO_OUTPUTS, error, reason, permanent, started, handler_s)
