"""Loading an actor by its import path (`module:Class`), built with its class's options."""

from __future__ import annotations

import importlib
from typing import Any

from router.errors import ActorLoadError
from router.runtime.actor import Actor


def load_actor(path: str, options: dict[str, Any]) -> Actor:
    """Import `module:Class` and build it with the class's options."""
    module_name, _, name = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ActorLoadError(path, str(exc)) from exc
    if not (isinstance(factory, type) and issubclass(factory, Actor)):
        raise ActorLoadError(path, "not a subclass of actors.api.Actor")
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise ActorLoadError(path, f"bad options: {exc}") from exc
