"""The service's pages, as served: each one file in `static/`, with the token handling they
share (`static/token.js`, asking for a token once per tab when the service has tokens)
written in where a page says `/*__TOKEN__*/`."""

from __future__ import annotations

from importlib import resources

STATIC = resources.files("router.ops").joinpath("static")
TOKEN_JS = STATIC.joinpath("token.js").read_text()


def page(name: str) -> str:
    """The page `static/<name>`, ready to serve."""
    return STATIC.joinpath(name).read_text().replace("/*__TOKEN__*/", TOKEN_JS)
