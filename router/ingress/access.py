"""Who may do what over HTTP: bearer tokens, each named for the source that holds it, with a
role and the topics it may post to.

- `ingest`: post events and upload media, on its topics only (a doorbell's token cannot post
  clinic events; a media path counts as its topic: `doorbell/front-door/clip.mp4`);
- `read`: the views (`/metrics`, `/classes`, the analytics, the clinic's board);
- `admin`: everything, including the writes that are not ingest (the device registry).
`/healthz` and `/readyz` are open to all, and say nothing secret; so are the pages (`/ui`,
`/clinic`, `/analytics/<workload>`), which hold nothing: what they fetch needs a read token,
which they ask for once and keep for the tab.

Tokens are looked up by their SHA-256, so the service holds no token in
clear, and the config file never holds one.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from router import redaction
from router.errors import ConfigError, ConfigIssue
from router.ingress.http import Reply, error_reply
from router.routing.rules import topic_matches

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from aiohttp.typedefs import Middleware

    from router.config import TokenConfig

# The health checks, and the pages (the console, the clinic's board, a workload's analytics):
# a page holds no data, and a browser cannot send a token with a page load; what it fetches
# asks for one.
OPEN_PATHS = frozenset(("/healthz", "/readyz", "/ui", "/clinic"))
ANALYTICS_PAGE = re.compile(r"/analytics/[^/]+")
INGEST_ROUTES = (("POST", "/events/"), ("PUT", "/media/"))
READING = frozenset(("GET", "HEAD"))
UNAUTHORIZED = (("WWW-Authenticate", 'Bearer realm="switchyard"'),)  # 401 says which scheme
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token may do."""

    name: str
    role: str
    topics: tuple[tuple[str, ...], ...]  # split filters

    def allows(self, need: str) -> bool:
        return self.role in ("admin", need)

    def covers(self, topic: str) -> bool:
        levels = topic.split("/")
        return any(topic_matches(topic_filter, levels) for topic_filter in self.topics)


class Access:
    """The configured tokens, by their SHA-256."""

    def __init__(self, grants: Mapping[bytes, Grant]) -> None:
        self._grants = dict(grants)

    @property
    def open(self) -> bool:
        """No tokens: everyone may do everything (allowed on loopback only)."""
        return not self._grants

    @classmethod
    def from_config(
        cls, tokens: Sequence[TokenConfig], environ: Mapping[str, str] | None = None
    ) -> Access:
        """Each token's digest, read from the config, its variable or its file; ConfigError
        naming the token (never its value) when one cannot be read."""
        environ = os.environ if environ is None else environ
        grants: dict[bytes, Grant] = {}
        issues: list[ConfigIssue] = []
        for index, token in enumerate(tokens):
            try:
                digest = _digest(token, environ)
            except ValueError as exc:
                issues.append(ConfigIssue(f"http.tokens.{index}", None, str(exc)))
                continue
            topics = tuple(tuple(topic.split("/")) for topic in token.topics)
            grants[digest] = Grant(token.name, token.role, topics)
        if issues:
            raise ConfigError("http.tokens", issues)
        return cls(grants)

    def grant(self, token: str) -> Grant | None:
        """The grant of `token`, or None. One look-up by the token's SHA-256, whatever the
        number of tokens (one per device is fine): how long it takes depends on a digest
        the caller cannot steer, so it says nothing about the tokens held."""
        return self._grants.get(hashlib.sha256(token.encode()).digest())

    def middleware(self) -> Middleware:
        """The aiohttp middleware that asks every request but the open ones for a token."""

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            need = need_of(request.method, request.path)
            if need is not None:
                authorization = request.headers.get("Authorization", "")
                refusal = self.refusal(authorization, need, request.path)
                if refusal is not None:
                    raise _refused(refusal)
            return await handler(request)

        checked: Middleware = guard
        return checked

    def refusal(self, authorization: str, need: str, path: str) -> Reply | None:
        """Why a request with this Authorization header may not do `need` at `path`: 401 (no
        token, or an unknown one) or 403 (not this token's to do); None when it may."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error_reply(401, "a bearer token is needed", UNAUTHORIZED)
        grant = self.grant(token.strip())
        if grant is None:
            return error_reply(401, "the token is not known", UNAUTHORIZED)
        if not grant.allows(need):
            return error_reply(403, f"token {grant.name!r} may not {need} here")
        topic = topic_of(path) if need == "ingest" else None
        if topic is not None and not grant.covers(topic):
            return error_reply(403, f"token {grant.name!r} may not post to {topic[:200]!r}")
        return None


def need_of(method: str, path: str) -> str | None:
    """The role a request needs: None for the open health checks."""
    if path in OPEN_PATHS or (method in READING and ANALYTICS_PAGE.fullmatch(path)):
        return None
    if any(method == verb and path.startswith(prefix) for verb, prefix in INGEST_ROUTES):
        return "ingest"
    return "read" if method in READING else "admin"


def topic_of(path: str) -> str | None:
    """The topic an ingest request posts to: the path after `/events/` or `/media/`."""
    for _, prefix in INGEST_ROUTES:
        if path.startswith(prefix):
            return path[len(prefix) :]
    return None


def _digest(token: TokenConfig, environ: Mapping[str, str]) -> bytes:
    if token.sha256 is not None:
        return bytes.fromhex(token.sha256)
    if token.env is not None:
        value = environ.get(token.env, "").strip()
        if not value:
            raise ValueError(f"token {token.name!r}: ${token.env} is not set")
    else:
        value = _read(token.name, token.file)
    redaction.remember(value)
    return hashlib.sha256(value.encode()).digest()


def _read(name: str, path: Path | None) -> str:
    try:
        value = Path(path or "").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"token {name!r}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"token {name!r}: {path} is empty")
    return value


def _refused(reply: Reply) -> web.HTTPError:
    kind = web.HTTPUnauthorized if reply.status == 401 else web.HTTPForbidden
    return kind(
        text=reply.body.decode(), content_type="application/json", headers=dict(reply.headers)
    )
