"""An alert for a device's owner, and what its delivery can end in.

A delivery that may succeed later (the receiver down, slow or overloaded, the broker away)
raises `NotDeliveredYet`: the handler fails and its event is retried with the class's
backoff. One that never will (the receiver refuses the signature or the request, the device
is not registered) raises `PermanentFailure`: the event goes to the dead letters with the
reason, and `switchyard dlq replay` sends it again once the cause is fixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from router.errors import SwitchyardError


class NotDeliveredYet(SwitchyardError):
    """A channel could not deliver now; the event is retried."""


@dataclass(frozen=True, slots=True)
class Alert:
    """`kind` (ring, motion, sound, offline, online) for `device`, raised by event `event_id`.

    `id` is stable across retries (the event's id and the kind), so a receiver that got an
    alert twice, once before a failure on another channel and once after, can tell.
    """

    kind: str
    device: str
    event_id: str
    at: float  # when it happened: the event's ingest time, Unix seconds
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.event_id}:{self.kind}"

    def body(self, workload: str, owner: str) -> bytes:
        """The JSON every channel sends."""
        document = {
            "alert_id": self.id,
            "workload": workload,
            "kind": self.kind,
            "device_id": self.device,
            "owner": owner,
            "at": self.at,
            "event_id": self.event_id,
            "details": self.details,
        }
        return json.dumps(document, separators=(",", ":"), default=str).encode()
