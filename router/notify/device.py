"""A registered device: whose it is, where its alerts go, and its own settings.

Checked when it is registered, so that a bad URL or threshold is refused at the CLI or the
HTTP call that brings it, not discovered when the first alert cannot be delivered.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # a topic level: no / + #
SETTINGS = {  # the settings a device may carry: name -> what it means
    "motion_threshold": "confidence (0..1) from which a motion detection alerts the owner",
    "sound_threshold": "confidence (0..1) from which a sound detection alerts the owner",
    "interval_s": "how often the device reports; silent for several intervals is offline",
}


class InvalidDevice(ValueError):
    """A device that cannot be registered as given; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Device:
    """One device of a workload's registry."""

    id: str
    owner: str
    webhook: str | None = None  # an http(s) URL the alerts are POSTed to, signed
    backchannel: bool = True  # also publish alerts on `<workload>/<id>/alerts`
    settings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_id(self.id)
        if not isinstance(self.owner, str) or not self.owner.strip():
            raise InvalidDevice("owner must be a non-empty string")
        if self.webhook is not None:
            _check_webhook(self.webhook)
        if not isinstance(self.backchannel, bool):
            raise InvalidDevice("backchannel must be true or false")
        for name, value in self.settings.items():
            _check_setting(name, value)

    def threshold(self, kind: str, default: float) -> float:
        """The confidence from which a detection of `kind` (motion, sound) alerts the owner."""
        return self.settings.get(f"{kind}_threshold", default)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Device:
        return cls.of(json.loads(text))

    @classmethod
    def of(cls, fields: Any, device_id: str | None = None) -> Device:
        """A device from JSON fields (an HTTP body, the registry), checked."""
        if not isinstance(fields, dict):
            raise InvalidDevice("a device is a JSON object")
        unknown = set(fields) - {"id", "owner", "webhook", "backchannel", "settings"}
        if unknown:
            raise InvalidDevice(f"unknown field(s): {', '.join(sorted(unknown))}")
        settings = fields.get("settings") or {}
        if not isinstance(settings, dict):
            raise InvalidDevice("settings must be an object")
        return cls(
            id=device_id if device_id is not None else fields.get("id"),  # type: ignore[arg-type]
            owner=fields.get("owner"),  # type: ignore[arg-type]
            webhook=fields.get("webhook"),
            backchannel=fields.get("backchannel", True),
            settings=settings,
        )


def _check_id(device_id: Any) -> None:
    if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
        raise InvalidDevice(
            f"device id {device_id!r:.60}: 1-128 letters, digits, '.', '_', ':' or '-'"
        )


def _check_webhook(url: Any) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidDevice(f"webhook {url!r:.80} is not an http(s) URL")


def _check_setting(name: str, value: Any) -> None:
    if name not in SETTINGS:
        raise InvalidDevice(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidDevice(f"{name} must be a number, not {value!r:.40}")
    if name.endswith("_threshold") and not 0 <= value <= 1:
        raise InvalidDevice(f"{name} must be between 0 and 1, not {value:g}")
    if name == "interval_s" and value <= 0:
        raise InvalidDevice(f"interval_s must be positive, not {value:g}")
