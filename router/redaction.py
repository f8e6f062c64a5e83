"""Secrets kept out of every output: the passwords and tokens the config names are
remembered as it is loaded, and every log line, command output and served view is scrubbed
of them. URLs are also shown with their password masked (`redact_url`), whoever prints them.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import MutableMapping

MASK = "***"
MIN_LENGTH = 4  # shorter values would scrub ordinary words; such a secret is no secret
SECRET_QUERY = ("password", "ssl_password", "token", "secret")
_known: set[str] = set()
_longest_first: list[str] = []  # _known, longest first: a secret inside another goes after it


def remember(*values: str | None) -> None:
    """Keep these values (and their URL-quoted forms) out of every output from now on."""
    for value in values:
        if value and len(value) >= MIN_LENGTH:
            _known.update({value, quote(value, safe=""), unquote(value)})
    _longest_first[:] = sorted(_known, key=len, reverse=True)  # sorted here, not per line


def remember_url(url: str | None) -> None:
    """Remember the password and secret query values of a URL."""
    if not url or "://" not in url:
        return
    parts = urlsplit(url)
    remember(parts.password)
    remember(*(value for name, value in parse_qsl(parts.query) if name in SECRET_QUERY))


def scrub(text: str) -> str:
    """`text` with every remembered secret masked."""
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """`url` with its password masked, for messages and logs."""
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in credentials:
        return scrub(url)
    user = credentials.partition(":")[0]
    return scrub(parts._replace(netloc=f"{user}:{MASK}@{hosts}").geturl())


def scrub_event(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    """A structlog processor: every text value of a log line scrubbed."""
    if not _known:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = scrub(value)
        elif isinstance(value, BaseException):
            event[key] = scrub(repr(value))
    return event


class Scrubbed(io.TextIOBase):
    """A text stream that scrubs what is written to it (a command's stdout and stderr)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return bool(self.stream.isatty())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.stream, "encoding", "utf-8"))

    def fileno(self) -> int:
        return int(self.stream.fileno())
