"""The service: wires config, Redis, ingest, pools, HTTP and MQTT; owns start, drain and stop.

Shutdown order (tested): stop the HTTP, then the MQTT ingress; stop every pool's reader and
send the lane workers SIGTERM; let in-flight work finish and be acknowledged within
`drain_timeout_s`, here and in the workers (killed if they outlast it); close Redis; stop the
embedded servers. Work still unfinished at the deadline stays pending in Redis for reclaim.

A lane worker (`python -m router worker`) is this same service with an `Assignment`: it runs
only its lane's pools and answers its parent on localhost instead of taking ingress.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from actors.pool import Pool, load_actor
from router import keys
from router.backoff import Backoff
from router.broker import EmbeddedBroker
from router.clock import Clock, SystemClock
from router.embedded import EmbeddedRedis
from router.errors import EmbeddedServerError
from router.exposition import merge, parse, render
from router.http import build_app, build_worker_app, start_site
from router.ingest import Ingest
from router.metrics import Metrics
from router.mqtt import MqttIngress
from router.retention import Retention
from router.routing import Router
from router.scheduler import LaneScheduler
from router.status import Reporter
from router.tasks import cancel_and_wait
from router.transport import UNAVAILABLE, StreamStats, Transport
from router.workers import HOST, Assignment, Workers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp import web

    from router.config import Config, LaneConfig

log = structlog.get_logger("switchyard.service")


URL_FILE = "url"


def resolve_redis_url(config: Config) -> str:
    """The Redis a command should talk to; for `embedded`, the running service's server."""
    if config.redis.url != "embedded":
        return config.redis.url
    path = config.redis.data_dir / URL_FILE
    try:
        return path.read_text().strip()
    except OSError:
        raise EmbeddedServerError(
            f"the embedded Redis is not running (no {path}); start the service, "
            "or set SWITCHYARD_REDIS_URL"
        ) from None


def consumer_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Service:
    """One Switchyard process: `async with Service(config) as service:`, or start()/stop()."""

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        http_port: int | None = None,
        assignment: Assignment | None = None,
    ) -> None:
        self.config = config
        self.assignment = assignment  # set in a lane worker: run only that lane's pools
        self.clock = clock or SystemClock()
        targets = [c.sla.target_ms / 1000 for c in config.classes.values() if c.sla]
        self.metrics = Metrics(registry or CollectorRegistry(), targets)
        self.router = Router.from_config(config)
        self.http_port = config.http.port if http_port is None else http_port
        if assignment is not None:
            self.http_port = assignment.port
        self.embedded: EmbeddedRedis | None = None
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttIngress | None = None
        self._mqtt_task: asyncio.Task[None] | None = None
        self.workers: Workers | None = None
        self._workers_task: asyncio.Task[None] | None = None
        self._workers_clean = True
        self.redis: Redis | None = None
        self.pools: dict[str, Pool] = {}
        self.stats: dict[str, StreamStats] = {}
        self._redis_ok = False
        self._runner: web.AppRunner | None = None
        self._group: asyncio.TaskGroup | None = None
        self._pool_tasks: list[asyncio.Task[None]] = []
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stopped = asyncio.Event()
        self._release_group = asyncio.Event()
        self._group_task: asyncio.Task[None] | None = None
        for name, cls in config.classes.items():
            self.metrics.declare_class(name, cls.lane)
            if cls.sla:
                self.metrics.declare_sla(name, cls.sla.target_ms / 1000, cls.sla.objective)

    @property
    def redis_client(self) -> Redis:
        if self.redis is None:
            raise RuntimeError("the service is not started")
        return self.redis

    @property
    def redis_url(self) -> str:
        return self.embedded.url if self.embedded else self.config.redis.url

    @property
    def exit_code(self) -> int:
        """0, or 1 when a lane worker did not drain cleanly at stop."""
        return 0 if self._workers_clean else 1

    def local_lanes(self) -> list[LaneConfig]:
        """The lanes this process runs pools of: a lane worker's own, or all but the workers'.

        Only these share the process's capacity: a lane run elsewhere reserves nothing here.
        """
        if self.assignment is not None:
            return [lane for lane in self.config.lanes if lane.name == self.assignment.lane]
        return [lane for lane in self.config.lanes if not lane.workers]

    def local_classes(self) -> list[str]:
        """The classes whose pools run in this process."""
        lanes = {lane.name for lane in self.local_lanes()}
        return [name for name, cls in self.config.classes.items() if cls.lane in lanes]

    # --- lifecycle ---

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect to Redis, start pools, then the ingresses; undo what started if a step fails."""
        try:
            await self._connect_redis()
            await self._start_pools()
            await self._start_workers()
            await self._start_mqtt()
            await self._start_http()
        except BaseException:
            await self.stop()
            raise
        log.info("switchyard started", classes=len(self.pools), consumer=self.transport.consumer)

    async def _connect_redis(self) -> None:
        redis_config = self.config.redis
        if redis_config.url == "embedded":
            self.embedded = EmbeddedRedis(redis_config.data_dir)
            await self.embedded.start()
            await asyncio.to_thread(
                (redis_config.data_dir / URL_FILE).write_text, self.embedded.url
            )
            log.info(
                "embedded redis started", url=self.embedded.url, data_dir=str(redis_config.data_dir)
            )
        pool = BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=redis_config.max_connections,
            timeout=10,  # seconds to wait for a free connection
            socket_keepalive=True,
            socket_connect_timeout=2,
            socket_timeout=redis_config.block_ms / 1000 + 5,  # a blocked read must not time out
            retry=Retry(NoBackoff(), 1),  # one fresh connection when a pooled one went stale
        )
        self.redis = Redis.from_pool(pool)  # the client owns the pool: aclose() closes both
        self.transport = Transport(
            self.redis,
            redis_config.group,
            consumer_name(),
            dedup_window_s=self.config.service.dedup_window_s,
        )
        self.ingest = Ingest(self.config, self.router, self.transport, self.metrics, self.clock)
        await self.redis.ping()  # fail at start, not at the first event
        self._redis_ok = True

    async def _start_pools(self) -> None:
        local = self.local_classes()
        everything = max(1, sum(self.config.classes[name].capacity for name in local))
        capacity = self.config.service.capacity or everything
        self.scheduler = LaneScheduler(capacity, self.local_lanes(), self.clock)
        self.pools = {name: self._build_pool(name) for name in local}
        await self._start_task_group()
        self._background.append(self._spawn("ingest:writer", self.ingest.writer.run))
        for name, pool in self.pools.items():
            self._pool_tasks.append(self._spawn(f"pool:{name}", pool.run, pool=pool))
        self._background.append(self._spawn("stats", self._stats_loop))
        if self.assignment is None:  # the service trims for its workers too
            retention = Retention(self.config, self.transport, self.metrics)
            self._background.append(self._spawn("retention", retention.run))

    async def _start_workers(self) -> None:
        """Start the lane workers, and wait (bounded) until they run their pools."""
        if self.assignment is not None or not self.config.isolated_lanes():
            return
        self.workers = Workers(self.config, self.redis_url, self.metrics)
        for name in self.workers.classes():
            await self.transport.ensure_group(name)  # so retention keeps what they have not read
        self._workers_task = self._spawn("workers", self.workers.run)
        await self.workers.wait_started()

    async def _start_task_group(self) -> None:
        """Own every long-running task in one TaskGroup, held by a task of the service's own.

        So a failing task can never cancel whoever called `start()`; and each task runs
        under `_keep_running`, so it cannot take its siblings down either.
        """
        ready = asyncio.Event()

        async def hold() -> None:
            async with asyncio.TaskGroup() as group:
                self._group = group
                ready.set()
                await self._release_group.wait()

        self._group_task = asyncio.create_task(hold(), name="service:tasks")
        await ready.wait()

    def _spawn(
        self, name: str, run: Callable[[], Awaitable[None]], pool: Pool | None = None
    ) -> asyncio.Task[None]:
        assert self._group is not None
        return self._group.create_task(self._keep_running(name, run, pool), name=name)

    async def _start_mqtt(self) -> None:
        mqtt = self.config.mqtt
        if not mqtt.enabled or self.assignment is not None:
            return
        url, protocol = mqtt.url, mqtt.protocol
        if url == "embedded":
            self.broker = EmbeddedBroker(mqtt.data_dir)
            await self.broker.start()
            url = self.broker.url
            await asyncio.to_thread((mqtt.data_dir / URL_FILE).write_text, url)
            if self.broker.protocol != protocol:
                log.warning("embedded broker speaks only MQTT 3.1.1", kind=self.broker.kind)
                protocol = self.broker.protocol
            log.info("embedded mqtt broker started", kind=self.broker.kind, url=url)
        self.mqtt = MqttIngress(mqtt, self.ingest, self.metrics, url=url, protocol=protocol)
        self._mqtt_task = self._spawn("mqtt:ingress", self.mqtt.run)

    async def _start_http(self) -> None:
        if self.assignment is not None:
            self._runner, _ = await start_site(build_worker_app(self), HOST, self.http_port)
        elif self.config.http.enabled:
            self._runner, self.http_port = await start_site(
                build_app(self), self.config.http.host, self.http_port
            )
            log.info("http ingress listening", host=self.config.http.host, port=self.http_port)

    def _build_pool(self, name: str) -> Pool:
        cls = self.config.classes[name]
        return Pool(
            cls=name,
            config=cls,
            actor=load_actor(cls.actor, cls.options),
            transport=self.transport,
            ingest=self.ingest,
            metrics=self.metrics,
            clock=self.clock,
            scheduler=self.scheduler,
            block_ms=self.config.redis.block_ms,
        )

    async def _keep_running(
        self, name: str, run: Callable[[], Awaitable[None]], pool: Pool | None
    ) -> None:
        """Run a task; restart it with backoff when it fails, so one part cannot stop the rest.

        A pool whose actor cannot start, or whose Redis set-up fails, is restarted this way too.
        """
        backoff = Backoff(initial=0.5, maximum=30.0)
        while True:
            try:
                await run()
            except Exception as exc:
                if self._stopping:
                    return
                delay = backoff.next_delay()
                if pool is not None:
                    self.metrics.pool_restarts.labels(pool.cls).inc()
                log.exception(
                    "task failed, restarting",
                    task=name,
                    error=repr(exc),
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
            else:
                return

    async def stop(self) -> None:
        """Drain and stop, in the documented order; safe to call twice, or while stopping."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        drained = False
        try:
            if self._runner is not None:
                await self._runner.cleanup()  # 1. no new events: HTTP, then MQTT
            await self._stop_mqtt()
            for pool in self.pools.values():
                pool.stop()  # 2. no new reads, here and in the lane workers
            if self.workers is not None:
                self.workers.stop()
            deadline_s = self.config.service.drain_timeout_s
            drained, self._workers_clean = await asyncio.gather(  # 3. in-flight
                self._wait_pools(deadline_s), self._drain_workers(deadline_s)
            )
            if not drained:
                log.warning("drain timeout passed, unfinished entries stay pending for reclaim")
        finally:
            # Even when our caller is cancelled mid-drain, nothing is left running or open.
            await asyncio.shield(self._close(drained))

    async def _close(self, drained: bool) -> None:
        await self._cancel_tasks()
        if self.workers is not None:
            await self.workers.close()
        if self.redis is not None:
            consumer = self.transport.consumer
            with contextlib.suppress(*UNAVAILABLE):  # leave the status table at once
                await self.redis.delete(keys.instance(consumer), keys.write_probe(consumer))
                await self.redis.zrem(keys.instances(), consumer)
            await self.redis.aclose()  # 4. close connections
        if self.broker is not None:
            await self.broker.stop()  # 5. the embedded servers last
            with contextlib.suppress(OSError):
                (self.config.mqtt.data_dir / URL_FILE).unlink()
        if self.embedded is not None:
            await self.embedded.stop()
            with contextlib.suppress(OSError):
                (self.config.redis.data_dir / URL_FILE).unlink()
        self._stopped.set()
        log.info("switchyard stopped", drained=drained, workers_clean=self._workers_clean)

    async def _cancel_tasks(self) -> None:
        """Cancel every task of the service until each is done, then end their TaskGroup."""
        tasks = [*self._pool_tasks, *self._background]
        tasks += [t for t in (self._mqtt_task, self._workers_task) if t is not None]
        await cancel_and_wait(*tasks)
        self._release_group.set()
        if self._group_task is not None:
            await self._group_task

    async def _stop_mqtt(self) -> None:
        """Stop taking MQTT messages; a batch being written is finished and acknowledged."""
        if self.mqtt is None or self._mqtt_task is None:
            return
        self.mqtt.stop()
        done, _ = await asyncio.wait([self._mqtt_task], timeout=self.config.service.drain_timeout_s)
        if not done:
            self._mqtt_task.cancel()  # unacknowledged messages stay with the broker

    async def _drain_workers(self, deadline_s: float) -> bool:
        """Wait for the lane workers' own drains; True when each exited cleanly."""
        return True if self.workers is None else await self.workers.drain(deadline_s)

    async def _wait_pools(self, deadline_s: float) -> bool:
        if not self._pool_tasks:
            return True
        done, pending = await asyncio.wait(self._pool_tasks, timeout=deadline_s)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("pool failed", task=task.get_name(), error=repr(task.exception()))
        return not pending

    # --- status ---

    async def _stats_loop(self) -> None:
        """Refresh the per-class gauges and this instance's status report; tracks Redis health."""
        interval = self.config.redis.stats_interval_s
        backoff = Backoff(initial=0.2, maximum=interval)
        # The service watches every stream (ingress sheds load by them); a worker, its own.
        names = list(self.pools) if self.assignment is not None else list(self.config.classes)
        reporter = Reporter(self.config, self.metrics)
        while True:
            inflight, compliance = self.pool_figures()
            try:
                self.stats = self.ingest.stats = await self.transport.stats(names)
                report = reporter.report(self.clock.monotonic(), inflight, compliance)
                await reporter.publish(self.redis_client, self.transport.consumer, report, interval)
                self._redis_ok = True
                backoff.reset()
                delay = interval
            except UNAVAILABLE as exc:
                if self._redis_ok:
                    log.warning("redis unreachable", error=str(exc))
                self._redis_ok = False
                delay = backoff.next_delay()
            self._publish_gauges(compliance)
            await asyncio.sleep(delay)

    def pool_figures(self) -> tuple[dict[str, int], dict[str, float]]:
        """Per class: entries in flight here, and SLA compliance over the rolling window."""
        now = self.clock.monotonic()
        inflight = {name: pool.inflight for name, pool in self.pools.items()}
        return inflight, {
            name: pool.sla_window.compliance(now) for name, pool in self.pools.items()
        }

    def _publish_gauges(self, compliance: dict[str, float]) -> None:
        """Per-class gauges from the last Redis stats and the pools' SLA windows."""
        metrics, wall = self.metrics, self.clock.wall()
        for name, stats in self.stats.items():
            metrics.backlog.labels(name).set(stats.backlog)
            metrics.pending.labels(name).set(stats.pending)
            metrics.dead_letters.labels(name).set(stats.dead_letters)
            age = max(0.0, wall - stats.oldest_ms / 1000) if stats.oldest_ms else 0.0
            metrics.oldest_pending.labels(name).set(age)
        for name, ratio in compliance.items():
            metrics.sla_compliance.labels(name).set(ratio)
        for lane, state in self.scheduler.snapshot().items():
            metrics.lane_inflight.labels(lane).set(state["used"])
            metrics.lane_waiting.labels(lane).set(state["waiting"])

    async def readiness_problems(self) -> list[str]:
        """Why this process should not receive traffic now; empty when ready."""
        problems = []
        try:
            async with asyncio.timeout(1.0):
                await self.transport.check_writable()
        except UNAVAILABLE as exc:
            problems.append(f"redis unavailable: {type(exc).__name__}: {exc}")
        if self.mqtt is not None and not self.mqtt.connected:
            problems.append(f"mqtt broker not connected ({self.mqtt.url})")
        problems += [
            f"pool {name} is not running" for name, pool in self.pools.items() if not pool.running
        ]
        if self.workers is not None:
            problems += await self.workers.problems()
        return problems

    async def class_views(self) -> dict[str, Any]:
        """Per-class JSON for /classes: settings, stream length, pending, backlog and in-flight,
        for the classes of this process and of its lane workers."""
        with contextlib.suppress(*UNAVAILABLE):  # the last known figures are still worth showing
            self.stats = await self.transport.stats(list(self.config.classes))
        views = {name: pool.snapshot() for name, pool in self.pools.items()}
        if self.workers is not None:
            views.update(await self.workers.class_views())
        workers = self.config.isolated_lanes()
        return {
            name: {
                **views[name],
                "workers": workers.get(self.config.classes[name].lane, 0),
                "stream_length": self.stats.get(name, StreamStats()).length,
                "pending": self.stats.get(name, StreamStats()).pending,
                "backlog": self.stats.get(name, StreamStats()).backlog,
            }
            for name in self.config.classes
            if name in views
        }

    async def exposition(self) -> bytes:
        """This process's metrics merged with its lane workers': one scrape per instance."""
        own = generate_latest(self.metrics.registry)
        if self.workers is None:
            return own
        sources = await self.workers.metric_sources()
        return render(merge([parse(own.decode()), *sources]))
