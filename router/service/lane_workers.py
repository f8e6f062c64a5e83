"""Lane workers: child processes that run one lane's pools, so a busy lane has CPUs of its own.

A lane with `workers: N` is run by N copies of `python -m router worker`, each an ordinary
consumer of the lane's class groups (Redis spreads the entries among them); the service then
runs no pool of that lane itself. A worker gets the service's validated config as JSON on
stdin (with the running Redis's URL), takes no HTTP or MQTT ingress, and answers its parent
on a localhost port: `/metrics`, `/readyz` and `/classes`. It writes one line, `ready`, on
stdout once its pools run; everything else it prints goes to stderr, shared with the parent.

The parent restarts a worker that exits on its own (with backoff, counted), merges the
workers' metrics into its own `/metrics` and their state into `/readyz` and `/classes`, and
at stop sends each SIGTERM (a worker drains exactly like the service), waits for the drain,
and SIGKILLs what outlasts it. Workers are session leaders (a terminal's Ctrl-C reaches the
service alone, which then stops them in order) and get SIGTERM when the parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from router.backoff import Backoff
from router.clock import wait_set
from router.config import Config, remember_secrets
from router.embedded.process import free_port, kill_process_group, parent_death_hook, signal_process
from router.ops.exposition import lasting, merge, parse

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client.metrics_core import Metric

    from router.metrics import Metrics

log = structlog.get_logger("switchyard.workers")

HOST = "127.0.0.1"
READY = b"ready\n"
READY_TIMEOUT_S = 15.0  # how long the service's start waits for its workers
STOP_MARGIN_S = 3.0  # beyond drain_timeout_s: a worker also closes Redis before it exits
ASK_TIMEOUT_S = 1.0  # a worker that does not answer its parent within this is skipped
KILL_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a worker process is told on its command line."""

    lane: str
    index: int
    port: int  # where it answers its parent

    @property
    def name(self) -> str:
        return f"{self.lane}#{self.index}"


@dataclass(eq=False, slots=True)
class Worker:
    """One worker slot of a lane; each start is a new process on a new port."""

    lane: str
    index: int
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False  # this process said it runs its pools, and has not exited
    terminated: bool = False  # this process was sent SIGTERM
    recycling: bool = False  # stopped to start again on a reloaded config, at once
    clean: bool = True  # at stop: drained and exited 0
    last: list[Metric] = field(default_factory=list)  # this process's last metrics answer
    retired: list[Metric] = field(default_factory=list)  # counters of its exited processes
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return f"{self.lane}#{self.index}"

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def terminate(self) -> None:
        """SIGTERM the running process, once: a second SIGTERM skips a service's drain."""
        if self.proc is not None and self.proc.returncode is None and not self.terminated:
            self.terminated = True
            signal_process(self.proc, signal.SIGTERM)

    def exited(self, code: int, stopping: bool) -> None:
        """Keep what the exited process counted; judge its exit when the service stops.

        SIGTERM before it was ready killed it before it installed its handler: it held nothing.
        """
        self.retired = merge([self.retired, lasting(self.last)])
        self.last = []
        if stopping:
            self.clean = code == 0 or (not self.ready and code == -signal.SIGTERM)
        self.ready = False


class Workers:
    """Starts, watches and stops the lane workers of one service."""

    def __init__(self, config: Config, redis_url: str, metrics: Metrics) -> None:
        self.config = config
        self.lanes = config.isolated_lanes()
        self.workers = [Worker(lane, i) for lane, count in self.lanes.items() for i in range(count)]
        self._payload = _config_json(config, redis_url)
        self._restarts, self._scrape_errors = metrics.enable_workers(self.lanes)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def classes(self) -> list[str]:
        """The classes the workers run, not the service."""
        return [name for name, cls in self.config.classes.items() if cls.lane in self.lanes]

    # --- lifecycle ---

    async def run(self) -> None:
        """Keep every worker running until `stop()`; returns once each has exited."""
        async with asyncio.TaskGroup() as group:
            self._tasks = [
                group.create_task(self._supervise(worker), name=f"worker:{worker.name}")
                for worker in self.workers
            ]

    async def wait_started(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once every worker's first process is ready, or log the laggards at timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                for worker in self.workers:
                    await worker.started.wait()
        except TimeoutError:
            names = [w.name for w in self.workers if not w.started.is_set()]
            log.warning("lane workers not ready yet, see /readyz", workers=names)

    def reconfigure(self, config: Config, redis_url: str, lanes: set[str]) -> None:
        """A reloaded config: the workers of `lanes` drain and start again on it, one lane's
        classes paused meanwhile; the others get it at their next start."""
        self.config = config
        self._payload = _config_json(config, redis_url)
        for worker in self.workers:
            if worker.lane in lanes:
                worker.recycling = True
                worker.terminate()

    def stop(self) -> None:
        """No more restarts; SIGTERM every worker, which then drains."""
        self._stopping.set()
        for worker in self.workers:
            worker.terminate()

    async def drain(self, deadline_s: float) -> bool:
        """Wait for the workers' drains; SIGKILL what outlasts them. True if each was clean."""
        self.stop()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=deadline_s + STOP_MARGIN_S)
            if late:
                self._kill_running()
                await asyncio.wait(late, timeout=KILL_WAIT_S)
        return all(worker.clean for worker in self.workers)

    def _kill_running(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                log.warning("lane worker did not drain in time, killing", worker=worker.name)
                signal_process(worker.proc, signal.SIGKILL, group=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _supervise(self, worker: Worker) -> None:
        """Run the worker's process; start a new one, after a backoff, when it exits on its own."""
        backoff = Backoff(initial=0.5, maximum=30.0)
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            began = loop.time()
            try:
                code: int | None = await self._run_once(worker)
            except OSError:
                log.exception("cannot start lane worker", worker=worker.name)
                code = None
            if self._stopping.is_set():
                return
            if worker.recycling:  # a reload: straight back, on the new config
                worker.recycling = False
                log.info("lane worker restarting on the reloaded config", worker=worker.name)
                continue
            if loop.time() - began > backoff.maximum:
                backoff.reset()  # it ran a good while: this is a new failure, not a loop
            delay = backoff.next_delay()
            self._restarts.labels(worker.lane).inc()
            log.warning(
                "lane worker exited, restarting",
                worker=worker.name,
                exit_code=code,
                retry_in_s=round(delay, 2),
            )
            await wait_set(self._stopping, delay)

    async def _run_once(self, worker: Worker) -> int:
        """Start a process for the worker and return its exit code."""
        proc = await self._spawn(worker)
        try:
            await self._send_config(proc)
            if self._stopping.is_set():
                worker.terminate()  # stop() came while it was starting
            log.info("lane worker started", worker=worker.name, pid=proc.pid, port=worker.port)
            assert proc.stdout is not None
            if await proc.stdout.readline() == READY:  # or b"" when it exited first
                worker.ready = True
                worker.started.set()
            return await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: leave nothing running
                await asyncio.shield(kill_process_group(proc))
            assert proc.returncode is not None
            worker.exited(proc.returncode, self._stopping.is_set())

    async def _spawn(self, worker: Worker) -> asyncio.subprocess.Process:
        worker.port = await asyncio.to_thread(free_port)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "worker",
            f"--lane={worker.lane}",
            f"--index={worker.index}",
            f"--port={worker.port}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=parent_death_hook(),
            start_new_session=True,
        )
        worker.proc, worker.terminated = proc, False
        return proc

    async def _send_config(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        proc.stdin.write(self._payload)
        proc.stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await proc.stdin.wait_closed()  # else it exited before reading: its exit code says why

    # --- what the workers report ---

    async def metric_sources(self) -> list[list[Metric]]:
        """Every worker's metric families, and the counts of its exited processes.

        A worker that does not answer now is counted, logged and represented by its last
        answer, so the merged counters never fall back.
        """
        replies = await asyncio.gather(*(self._get(w, "/metrics") for w in self.workers))
        sources: list[list[Metric]] = []
        for worker, reply in zip(self.workers, replies, strict=True):
            families = _families(reply)
            if families is not None:
                worker.last = families
            elif worker.ready:
                self._scrape_errors.labels(worker.lane).inc()
                log.warning("lane worker did not answer for metrics", worker=worker.name)
            sources += [worker.last, worker.retired]
        return sources

    async def problems(self) -> list[str]:
        """Why a worker is not ready, one line each; empty when all are."""
        replies = await asyncio.gather(*(self._get(w, "/readyz") for w in self.workers))
        problems = []
        for worker, reply in zip(self.workers, replies, strict=True):
            if not worker.ready:
                problems.append(f"lane worker {worker.name} is not running")
            elif reply is None:
                problems.append(f"lane worker {worker.name} does not answer")
            elif reply[0] != 200:
                theirs = json.loads(reply[1]).get("problems", [])
                problems += [f"lane worker {worker.name}: {problem}" for problem in theirs]
        return problems

    async def class_views(self) -> dict[str, dict[str, Any]]:
        """The workers' classes for /classes: in-flight summed over the lane's workers."""
        replies = await asyncio.gather(*(self._get(w, "/classes") for w in self.workers))
        answers = {
            worker: json.loads(reply[1])
            for worker, reply in zip(self.workers, replies, strict=True)
            if reply is not None and reply[0] == 200
        }
        views: dict[str, dict[str, Any]] = {}
        for name in self.classes():
            cls = self.config.classes[name]
            pools = [a[name] for w, a in answers.items() if w.lane == cls.lane and name in a]
            views[name] = {
                "lane": cls.lane,
                "mode": cls.mode,
                "concurrency": cls.concurrency,
                "inflight": sum(int(pool["inflight"]) for pool in pools),
                "running": len(pools) == self.lanes[cls.lane] and all(p["running"] for p in pools),
            }
        return views

    async def _get(self, worker: Worker, path: str) -> tuple[int, str] | None:
        """A ready worker's answer (status, body); None when it is not ready or does not answer."""
        if not worker.ready:
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
            )
        try:
            async with self._session.get(worker.url(path)) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None


def _families(reply: tuple[int, str] | None) -> list[Metric] | None:
    if reply is None or reply[0] != 200:
        return None
    try:
        return parse(reply[1])
    except ValueError:
        return None


def _config_json(config: Config, redis_url: str) -> bytes:
    """The config a worker gets: the service's own, on the Redis the service actually uses.

    Only the keys that were set are written, so the worker validates exactly the same input.
    """
    redis = config.redis.model_copy(update={"url": redis_url})
    own = config.model_copy(update={"redis": redis})
    return own.model_dump_json(by_alias=True, exclude_unset=True).encode()


def read_config(data: bytes) -> Config:
    """The config a worker got from its parent, its secrets kept out of the worker's logs."""
    config = Config.model_validate_json(data)
    remember_secrets(config)
    return config


# --- inside a worker process ---


def claim_stdout() -> Callable[[], None]:
    """Keep stdout for the ready line alone; anything else printed goes to stderr.

    Returns the function that writes the line (and closes stdout, so the parent's read ends).
    """
    ready = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)

    def announce() -> None:
        ready.write(READY)
        ready.close()

    return announce
