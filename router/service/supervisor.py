"""The supervisor: every long-running task of a process, owned in one place.

Tasks run in one TaskGroup held by a task of the supervisor's own, so a failing task can
never cancel whoever called `start()`; each runs under `_keep_running`, so it cannot take its
siblings down either: a failure is logged and the task restarted with backoff. A task failing
the same way again (a class's stream key of the wrong type, say, until an operator fixes it)
is said in one line each time, its traceback only the first time; one that ran for a while
before failing starts its backoff afresh. At stop, every task is cancelled until it is done
(`router.tasks.cancel_and_wait`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from router.backoff import Backoff
from router.tasks import cancel_and_wait

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = structlog.get_logger("switchyard.supervisor")

HEALTHY_S = 60.0  # a task that ran this long before it failed starts its backoff afresh


class Supervisor:
    """Starts named tasks, restarts the ones that fail, and cancels all of them at the end."""

    def __init__(self, *, initial_s: float = 0.5, maximum_s: float = 30.0) -> None:
        self.initial_s, self.maximum_s = initial_s, maximum_s  # the restarts' backoff
        self.stopping = False  # once set, a failing task is not restarted
        self._tasks: list[asyncio.Task[None]] = []
        self._group: asyncio.TaskGroup | None = None
        self._release = asyncio.Event()
        self._holder: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()

        async def hold() -> None:
            async with asyncio.TaskGroup() as group:
                self._group = group
                ready.set()
                await self._release.wait()

        self._holder = asyncio.create_task(hold(), name="service:tasks")
        await ready.wait()

    def spawn(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        restarted: Callable[[], None] | None = None,
    ) -> asyncio.Task[None]:
        """Run `run` as task `name`; `restarted` is called each time it fails and restarts."""
        if self._group is None:
            raise RuntimeError("the supervisor is not started")
        task = self._group.create_task(self._keep_running(name, run, restarted), name=name)
        self._tasks.append(task)
        return task

    async def close(self) -> None:
        """Cancel every task until each is done, then end their TaskGroup."""
        self.stopping = True
        await cancel_and_wait(*self._tasks)
        self._release.set()
        if self._holder is not None:
            await self._holder

    async def _keep_running(
        self, name: str, run: Callable[[], Awaitable[None]], restarted: Callable[[], None] | None
    ) -> None:
        """Run a task; restart it with backoff when it fails, so one part cannot stop the rest.

        A pool whose actor cannot start, or whose Redis set-up fails, is restarted this way too.
        """
        backoff = Backoff(initial=self.initial_s, maximum=self.maximum_s)
        loop = asyncio.get_running_loop()
        said = ""
        while True:
            began = loop.time()
            try:
                await run()
            except Exception as exc:
                if self.stopping:
                    return
                if loop.time() - began >= HEALTHY_S:
                    backoff.reset()
                    said = ""
                delay = backoff.next_delay()
                if restarted is not None:
                    restarted()
                error = repr(exc)
                _say_failed(name, error, again=error == said, failures=backoff.failures,
                            delay=delay)  # fmt: skip
                said = error
                await asyncio.sleep(delay)
            else:
                return


def _say_failed(name: str, error: str, *, again: bool, failures: int, delay: float) -> None:
    """A task's failure, while it is handled: its traceback only the first time it failed
    this way."""
    said = {"task": name, "error": error, "failures": failures, "retry_in_s": round(delay, 2)}
    if again:
        log.error("task failed again, restarting", **said)
    else:
        log.exception("task failed, restarting", **said)
