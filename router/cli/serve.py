"""`switchyard run`, `switchyard demo` and the lane worker (`switchyard worker`, internal):
a service in the foreground until SIGTERM or Ctrl-C, drained before it exits.

A second signal exits at once; what was unfinished stays pending in Redis for reclaim.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from router import heap, loops
from router.cli.common import EXIT_CONFIG, add_config_option, logging_for, with_config
from router.cli.demo import DemoOptions, run_demo
from router.cli.owners import with_a_secret
from router.errors import ConfigError, EmbeddedServerError
from router.service.lane_workers import Assignment, claim_stdout, read_config
from router.service.service import Service
from router.streams.transport import UNAVAILABLE

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from router.config import Config

log = structlog.get_logger("switchyard.cli")
RUN_HELP = "run the service until SIGTERM or Ctrl-C"
DEMO_HELP = "run the service with a simulator of the three workloads and a live summary"


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help=RUN_HELP, description=RUN_HELP)
    add_config_option(run)
    run.set_defaults(handler=with_config(_run))
    demo = commands.add_parser("demo", help=DEMO_HELP, description=DEMO_HELP)
    add_config_option(demo)
    demo.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="simulated events per second (default: %(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--every", type=float, default=5.0, help="seconds between summaries (default: %(default)s)"
    )
    demo.set_defaults(handler=with_config(_demo))
    # Internal (no help, so not listed): a lane worker, started by the service itself.
    worker = commands.add_parser("worker", description="a lane worker; config JSON on stdin")
    worker.add_argument("--lane", required=True)
    worker.add_argument("--index", type=int, default=0)
    worker.add_argument("--port", type=int, required=True, help="where it answers its parent")
    worker.set_defaults(handler=_worker)


def _run(args: argparse.Namespace, config: Config) -> int:
    logging_for(config)
    return _serve(config, demo=None)


def _demo(args: argparse.Namespace, config: Config) -> int:
    logging_for(config, default_level="warning")
    options = DemoOptions(rate=args.rate, duration=args.duration, every=args.every)
    code = _serve(in_one_process(with_a_secret(config)), demo=options)
    outcome = "stopped cleanly" if code == 0 else f"stopped with exit code {code}"
    print(f"switchyard demo: {outcome}", flush=True)
    return code


def in_one_process(config: Config) -> Config:
    """The config with every lane run by the service itself: the demo's summary reads this
    process's counters, and at its rate no lane needs a core of its own."""
    lanes = [lane.model_copy(update={"workers": 0}) for lane in config.lanes]
    single: Config = config.model_copy(update={"lanes": lanes})
    return single


def _worker(args: argparse.Namespace) -> int:
    """A lane worker: the service's own config from stdin, only its lane's pools, no ingress."""
    announce = claim_stdout()
    try:
        config = read_config(sys.stdin.buffer.read())
    except ValidationError as exc:
        print(f"switchyard worker: the config on stdin is not valid: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.lane not in config.isolated_lanes():
        print(f"switchyard worker: lane {args.lane!r} has no workers", file=sys.stderr)
        return EXIT_CONFIG
    logging_for(config)
    assignment = Assignment(args.lane, args.index, args.port)
    structlog.contextvars.bind_contextvars(worker=assignment.name)
    return _serve(config, demo=None, assignment=assignment, ready=announce)


def _serve(
    config: Config,
    demo: DemoOptions | None,
    assignment: Assignment | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    try:
        loop_factory = loops.factory(config.service.loop)
    except ValueError as exc:  # uvloop asked for and not installed
        print(f"switchyard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return loops.run(_serve_async(config, demo, assignment, ready), loop_factory)
    except ConfigError as exc:  # what the config asks cannot be done with the data in Redis
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except EmbeddedServerError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
    except UNAVAILABLE as exc:
        print(f"switchyard: cannot reach Redis at {config.redis.url}: {exc}", file=sys.stderr)
    return 1


async def _serve_async(
    config: Config,
    demo: DemoOptions | None,
    assignment: Assignment | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    stop = asyncio.Event()
    _on_signals(stop, worker=assignment is not None)
    reload_asked = asyncio.Event()  # SIGHUP: read the config file again, once started
    if assignment is None:  # a worker follows its parent's config instead
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_asked.set)
    async with Service(config, assignment=assignment) as service:
        if assignment is None:
            service.supervisor.spawn("reload", functools.partial(_reloads, service, reload_asked))
        heap.settle()  # what start-up made stays; collections walk only what events make
        if ready is not None:
            ready()
        if demo is not None:
            await run_demo(service, demo, stop)
        else:
            await stop.wait()
    return service.exit_code


async def _reloads(service: Service, asked: asyncio.Event) -> None:
    """A reload each time SIGHUP asks (those that come during one are served by the next),
    its outcome in the log."""
    while True:
        await asked.wait()
        asked.clear()
        await service.reload()


def _on_signals(stop: asyncio.Event, *, worker: bool) -> None:
    """SIGINT and SIGTERM set `stop` (a drain); a second one exits at once."""
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1 and worker:
            # A worker's parent stops it (SIGKILL past the deadline); a dying parent's threads
            # can each deliver its parent-death SIGTERM, which must not cut the drain short.
            return
        if signals > 1:
            log.warning("second signal, exiting at once; unfinished entries stay pending")
            os._exit(130)
        log.info("signal received, draining")
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
