"""Loading what a config names by import path (`module:Name`): actors, analytics providers."""

from __future__ import annotations

import importlib
from typing import Any

from router.errors import ActorLoadError
from router.runtime.actor import Actor


def import_object(path: str) -> Any:
    """The object `module:Name` names; ImportError saying what is missing."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ImportError(f"{path!r} is not an import path of the form module:Name")
    try:
        return getattr(importlib.import_module(module_name), name)
    except AttributeError as exc:
        raise ImportError(f"module {module_name!r} has no {name!r}") from exc


def load_actor(path: str, options: dict[str, Any]) -> Actor:
    """Import `module:Class` and build it with the class's options."""
    try:
        factory = import_object(path)
    except ImportError as exc:
        raise ActorLoadError(path, str(exc)) from exc
    if not (isinstance(factory, type) and issubclass(factory, Actor)):
        raise ActorLoadError(path, "not a subclass of actors.api.Actor")
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise ActorLoadError(path, f"bad options: {exc}") from exc
