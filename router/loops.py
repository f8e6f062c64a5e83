"""The event loop a process runs on (`service.loop`): uvloop where it is installed and asked
for (`auto`, the default, or `uvloop`), else asyncio's own."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

T = TypeVar("T")


def chosen(setting: str) -> str:
    """`asyncio` or `uvloop`, for a setting of `auto`, `asyncio` or `uvloop`; ValueError when
    uvloop is asked for and not installed."""
    installed = importlib.util.find_spec("uvloop") is not None
    if setting == "uvloop" and not installed:
        raise ValueError("service.loop is uvloop, which is not installed: pip install uvloop")
    if setting == "auto":
        return "uvloop" if installed else "asyncio"
    return setting


def factory(setting: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for `asyncio.Runner` (None: asyncio's own)."""
    if chosen(setting) != "uvloop":
        return None
    import uvloop  # noqa: PLC0415  (an optional speed-up, imported only when it runs)

    made: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return made


def run(
    main: Coroutine[Any, Any, T], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> T:
    """Run `main` to completion on a loop from `loop_factory` (see `factory`)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)
