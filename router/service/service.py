"""The service: wires one process together and owns its start, drain and stop.

Start order: RedisClient (the embedded server first, when configured), the first heartbeat, the
pools, the lane workers, the MQTT ingress, HTTP. Every long-running task belongs to the
`Supervisor`. The pools of ordered partitions start and stop as `Ownership` hands them to
this process or away from it.

Shutdown order (tested): stop the HTTP, then the MQTT ingress; stop every pool's reader and
send the lane workers SIGTERM; let in-flight work finish and be acknowledged within
`drain_timeout_s`, here and in the workers (killed if they outlast it), ordered partitions
keeping their leases meanwhile; give up the leases and leave the lanes; close Redis; stop the
embedded servers. Work still unfinished at the deadline stays pending in Redis for reclaim.

A lane worker (`python -m router worker`) is this same service with an `Assignment`: it runs
only its lane's pools and answers its parent on localhost instead of taking ingress.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.clock import Clock, SystemClock
from router.config import load_config
from router.errors import ConfigError, ConfigIssue
from router.fleet.announce import Announcer
from router.fleet.presence import Presence
from router.fleet.watch import FleetWatch
from router.ingress.access import Access
from router.ingress.http import EventsEndpoint
from router.ingress.ingest import Ingest
from router.ingress.media import MediaEndpoint
from router.ingress.media_upkeep import MediaUpkeep
from router.ingress.mqtt import MqttIngress
from router.metrics import Metrics, SlaWindow
from router.notify.notifier import Notifier
from router.ops.analytics_gauges import EVERY_S as GAUGES_EVERY_S
from router.ops.analytics_gauges import ProviderGauges
from router.ops.analytics_http import AnalyticsViews
from router.ops.clinic_http import ClinicViews
from router.ops.console import ConsoleViews, broker_said
from router.ops.devices_http import DeviceViews
from router.ops.doorbell_http import DoorbellViews
from router.ops.lookups import RedisLookups
from router.ops.stats import StatsLoop
from router.routing.addressing import Addresser
from router.routing.rules import Router
from router.runtime.loader import load_actor
from router.runtime.pool import Pool
from router.runtime.scheduler import LaneScheduler
from router.service.lane_workers import HOST, Assignment, Workers
from router.service.membership import Membership
from router.service.ownership import Ownership
from router.service.placement import Placement
from router.service.reload import Plan, Reloaded, check_actors, plan
from router.service.servers import MqttBroker, RedisConnection, broker_url, consumer_name
from router.service.supervisor import Supervisor
from router.service.views import ServiceViews
from router.service.web import metrics_app, service_app, start_site, worker_app
from router.streams import keys
from router.streams.layout import partition_problems, record_partitions
from router.streams.line import Lines
from router.streams.records import Records
from router.streams.redis import RedisTransport
from router.streams.retention import Retention
from router.streams.transport import UNAVAILABLE, per_class

if TYPE_CHECKING:
    from router.config import Config, HttpConfig, MediaConfig
    from router.embedded.broker import EmbeddedBroker
    from router.streams.client import RedisClient
    from router.streams.transport import StreamStats

log = structlog.get_logger("switchyard.service")


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
        self.placement = Placement(config, assignment)
        self.clock = clock or SystemClock()
        targets = [c.sla.target_ms / 1000 for c in config.classes.values() if c.sla]
        self.metrics = Metrics(registry or CollectorRegistry(), targets)
        for name, cls in config.classes.items():
            self.metrics.declare_class(name, cls.lane)
            if cls.sla:
                self.metrics.declare_sla(name, cls.sla.target_ms / 1000, cls.sla.objective)
        self.addresser = Addresser(config, Router.from_config(config), self.clock)
        self.http_port = config.http.port if http_port is None else http_port
        if assignment is not None:
            self.http_port = assignment.port
        self.supervisor = Supervisor()
        self.connection = RedisConnection(config.redis)
        self._broker = MqttBroker(config.mqtt)
        self.mqtt: MqttIngress | None = None
        self.mqtt_task: asyncio.Task[None] | None = None
        self.workers: Workers | None = None
        self.notifier: Notifier | None = None
        self.presence: Presence | None = None
        self.announcer: Announcer | None = None
        self.fleet: FleetWatch | None = None
        self.pools: dict[str, Pool] = {}
        self._pool_tasks: dict[str, asyncio.Task[None]] = {}  # by partition tag
        self.ownership: Ownership | None = None
        self._stats: StatsLoop | None = None
        self.views = ServiceViews(self)
        self.config_generation = 1
        self.config_hash = config.fingerprint()
        self.metrics.config_info.labels(self.config_hash, "1").set(1)
        self._reloading = asyncio.Lock()
        self._file_seen = config.file_digest  # the config file's digest as last read
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._workers_clean = True
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def redis(self) -> RedisClient | None:
        return self.connection.client

    @property
    def redis_url(self) -> str:
        return self.connection.url

    @property
    def broker(self) -> EmbeddedBroker | None:
        """The embedded broker this process started, if it did."""
        return self._broker.embedded

    @property
    def stats(self) -> dict[str, StreamStats]:
        """The streams' latest figures, as the stats loop last read them."""
        return self._stats.stats if self._stats is not None else {}

    @property
    def exit_code(self) -> int:
        """0, or 1 when a lane worker did not drain cleanly at stop."""
        return 0 if self._workers_clean else 1

    # --- start ---

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect to Redis, start pools, then the ingresses; undo what started if a step fails."""
        try:
            await self._connect()
            await self.supervisor.start()
            await self._join()
            self._start_pools()
            self._start_fleet()
            await self._start_workers()
            await self._start_mqtt()
            await self._start_http()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "switchyard started",
            loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
            classes=len(self.placement.classes()),
            consumer=self.transport.consumer,
        )

    async def _connect(self) -> None:
        redis = await self.connection.open()
        self.transport = RedisTransport(
            redis,
            self.config.redis.group,
            consumer_name(),
            dedup_window_s=self.config.service.dedup_window_s,
            lines=Lines(redis),
        )
        self.ingest = Ingest(self.config, self.addresser, self.transport, self.metrics, self.clock)
        if self.config.fleet and self.assignment is None:
            self.announcer = Announcer(self._announce)
            self.presence = Presence(redis, self.config.fleet, self.announcer)
            self.ingest.on_seen = self.presence.seen
        mqtt = self.config.mqtt
        self.notifier = Notifier(
            redis, self.config.notify,
            broker=functools.partial(broker_url, mqtt) if mqtt.url != "off" else None,
            protocol=mqtt.protocol, metrics=self.metrics.registry,
        )  # fmt: skip
        if self.assignment is None:  # the service checks the layout; its lane workers follow it
            await self._check_partitions()

    async def _join(self) -> None:
        """Beat once before any pool reads, so the lanes' other processes count this one."""
        settings = self.config.service
        lanes = [lane.name for lane in self.placement.lanes()]
        if self.assignment is None:  # services also share the upkeep: retention, figures
            lanes.append(keys.SERVICES)
        membership = Membership(
            self.transport.redis, self.transport.consumer, lanes,
            settings.member_timeout_s, settings.heartbeat_s,
        )  # fmt: skip
        ordered: dict[str, list[str]] = {}
        for name in self.placement.classes():
            cls = self.config.classes[name]
            if cls.ordered:
                ordered.setdefault(cls.lane, []).extend(keys.tags(name, cls.partitions))
        self.ownership = Ownership(
            membership=membership, transport=self.transport, clock=self.clock,
            heartbeat_s=settings.heartbeat_s, drain_timeout_s=settings.drain_timeout_s,
            ordered=ordered, shared=self._shared_pools, launch=self._launch_owned,
            retire=self._retire_owned,
        )  # fmt: skip
        await self.ownership.join()

    async def _check_partitions(self) -> None:
        """Refuse a partition count that would orphan waiting events; else record the counts."""
        problems = await partition_problems(self.transport, self.config)
        if problems:
            issues = [
                ConfigIssue(f"classes.{name}.partitions", self._line(name), why)
                for name, why in problems.items()
            ]
            raise ConfigError(self.config.source, issues)
        await record_partitions(self.transport.redis, self.config)

    def _line(self, name: str) -> int | None:
        return self.config.line_of(("classes", name, "partitions"))

    def _start_pools(self) -> None:
        local = self.placement.classes()
        everything = max(1, sum(self._capacity_of(name) for name in local))
        capacity = self.config.service.capacity or everything
        self.scheduler = LaneScheduler(capacity, self.placement.lanes(), self.clock)
        self.windows = {name: SlaWindow() for name in local}
        spawn = self.supervisor.spawn
        spawn("ingest:writer", self.ingest.writer.run)
        for name in local:
            cls = self.config.classes[name]
            if not cls.ordered:  # ordered partitions start when this process owns them
                for tag in keys.tags(name, cls.partitions):
                    self._start_pool(name, tag)
        assert self.ownership is not None  # joined before the pools start
        spawn("ownership", self.ownership.run)
        self._stats = self._stats_loop()
        spawn("stats", self._stats.run)
        if self.config.service.watch_config and self.assignment is None:
            spawn("config:watch", self.watch_config)
        if self.assignment is None:  # the service trims for its workers too
            retention = Retention(self.config, self.transport, self.metrics, self._upkeep)
            spawn("retention", retention.run)

    def _capacity_of(self, name: str) -> int:
        cls = self.config.classes[name]
        return cls.capacity * cls.partitions

    def _upkeep(self, tag: str) -> bool:
        """Whether this process keeps a partition's shared upkeep (retention, figures); a
        lane worker never does, its service does it for it."""
        ownership = self.ownership
        return (
            self.assignment is None
            and ownership is not None
            and ownership.keeper(keys.SERVICES, tag)
        )

    def _shared_pools(self, lane: str) -> list[Pool]:
        """This process's pools of unordered partitions in `lane`."""
        return [p for p in self.pools.values() if p.config.lane == lane and not p.config.ordered]

    def _launch_owned(self, tag: str) -> tuple[Pool, asyncio.Task[None]]:
        """Start the pool of an ordered partition whose lease this process just took."""
        return self._start_pool(keys.class_of(tag), tag)

    def _retire_owned(self, tag: str, pool: Pool) -> None:
        """An ordered partition's pool ended here (handed over, or its lease lost): it no
        longer counts for readiness or the views."""
        if self.pools.get(tag) is pool:
            del self.pools[tag], self._pool_tasks[tag]

    def _start_pool(self, name: str, tag: str) -> tuple[Pool, asyncio.Task[None]]:
        """Build and run the pool of one partition of a class."""
        cls = self.config.classes[name]
        ownership = self.ownership
        assert ownership is not None  # joined before the pools start
        pool = Pool(
            cls=name,
            tag=tag,
            config=cls,
            actor=load_actor(cls.actor, cls.options),
            transport=self.transport,
            addresser=self.addresser,
            metrics=self.metrics,
            clock=self.clock,
            scheduler=self.scheduler,
            block_ms=self.config.redis.block_ms,
            sla_window=self.windows[name],
            keeper=lambda: ownership.keeper(cls.lane, tag),
            leased=(lambda: ownership.leased(tag)) if cls.ordered else None,
            notifier=self.notifier,
            records=Records(self.transport.redis, keys.workload_of(name)),
        )
        self.pools[tag] = pool
        restarted = self.metrics.pool_restarts.labels(name).inc
        task = self.supervisor.spawn(f"pool:{tag}", pool.run, restarted)
        self._pool_tasks[tag] = task
        return pool, task

    def _start_fleet(self) -> None:
        """Watch the fleets for silence: one service per workload keeps each watch."""
        if self.presence is None or self.announcer is None:
            return
        ownership = self.ownership
        assert ownership is not None  # joined before
        self.fleet = FleetWatch(
            self.transport.redis, self.config.fleet, self.presence, self.announcer,
            clock=self.clock, keeper=lambda name: ownership.keeper(keys.SERVICES, f"_fleet:{name}"),
        )  # fmt: skip
        self.supervisor.spawn("fleet", self.fleet.run)

    async def _announce(self, messages: list[tuple[str, bytes]]) -> None:
        await self.ingest.accept_messages(messages, source="fleet")

    def _stats_loop(self) -> StatsLoop:
        # The service watches every stream (ingress sheds load by them); a worker, its own.
        classes = self.placement.classes() if self.assignment is not None else self.config.classes
        watched = [t for c in classes for t in keys.tags(c, self.config.classes[c].partitions)]

        def fresh(stats: dict[str, StreamStats]) -> None:
            self.ingest.shedding.stats = stats

        return StatsLoop(
            self.config, self.transport, self.transport.redis, self.metrics,
            clock=self.clock, scheduler=self.scheduler, tags=watched,
            figures=self.views.pool_figures, fresh=fresh, keeper=self._upkeep,
        )  # fmt: skip

    async def _start_workers(self) -> None:
        """Start the lane workers, and wait (bounded) until they run their pools."""
        if self.assignment is not None or not self.config.isolated_lanes():
            return
        self.workers = Workers(self.config, self.redis_url, self.metrics)
        for name in self.workers.classes():  # so retention keeps what they have not read
            for tag in keys.tags(name, self.config.classes[name].partitions):
                await self.transport.ensure_group(tag)
        self.supervisor.spawn("workers", self.workers.run)
        await self.workers.wait_started()

    async def _start_mqtt(self) -> None:
        if not self.config.mqtt.enabled or self.assignment is not None:
            return
        url, protocol = await self._broker.open()
        self.mqtt = MqttIngress(
            self.config.mqtt, self.ingest, self.metrics, url=url, protocol=protocol
        )
        self.mqtt_task = self.supervisor.spawn("mqtt:ingress", self.mqtt.run)

    async def _start_http(self) -> None:
        if self.assignment is not None:
            self._runner, _ = await start_site(worker_app(self.views), HOST, self.http_port)
        elif self.config.http.enabled:
            limits = self.config.service
            http = self.config.http
            events = EventsEndpoint(self.ingest, self.metrics, limits, http.body_timeout_s)
            access = Access.from_config(http.tokens)
            analytics = AnalyticsViews(self.config.analytics, self._lookups)
            app = service_app(
                events, self.views, http, limits.max_body_bytes, analytics=analytics, access=access
            )
            if self.notifier is not None:
                DeviceViews(self.notifier).add_routes(app)
            DoorbellViews(analytics).add_routes(app)
            ClinicViews(analytics).add_routes(app)
            app.router.add_post("/admin/reload", self._reload_view)
            ConsoleViews(self, self.transport.redis, self.transport).add_routes(app)
            gauges = ProviderGauges(analytics.providers, self.metrics.registry, GAUGES_EVERY_S)
            if gauges.providers:
                self.supervisor.spawn("analytics:gauges", gauges.run)
            if self.config.media is not None:
                self._start_media(self.config.media).add_routes(app)
            self._runner, self.http_port = await start_site(
                app, http.host, self.http_port, http, (events, access)
            )
            log.info("http ingress listening", host=http.host, port=self.http_port,
                     tokens=len(http.tokens), access=_access_said(http))  # fmt: skip
            await self._start_metrics_listener(http)

    async def _start_metrics_listener(self, http: HttpConfig) -> None:
        """`http.metrics_port`: /metrics, /healthz and /readyz, open, on a listener of their own."""
        if http.metrics_port is None:
            return
        host = http.metrics_host or http.host
        app = metrics_app(self.views, http.metrics_every_s)
        plain = http.model_copy(update={"cert_file": None, "key_file": None})  # a private address
        self._metrics_runner, port = await start_site(app, host, http.metrics_port, plain)
        log.info("metrics listening", host=host, port=port)

    def _lookups(self, workload: str) -> RedisLookups:
        """A workload's live state, for its analytics provider."""
        return RedisLookups(self.transport.redis, self.transport, self.config, workload)

    def _start_media(self, settings: MediaConfig) -> MediaEndpoint:
        """The clip endpoints, and the sweep of their store (retention, recovery)."""
        metrics = self.metrics.enable_media()
        media = MediaEndpoint(settings, self.ingest, metrics, self.clock)
        upkeep = MediaUpkeep(settings, media.clips, media.announcer, metrics, self.clock)
        self.supervisor.spawn("media:upkeep", upkeep.run)
        return media

    # --- reload ---

    async def reload(self, path: str | None = None) -> Reloaded:
        """Read the config file again (or `path`) and apply it live, as one step between two
        requests, or refuse it, changing nothing (see `router.service.reload`)."""
        async with self._reloading:
            source = path or self.config.source
            if source == self.config.source:  # read before the file: a later edit is seen
                self._file_seen = await asyncio.to_thread(_fingerprint_of, Path(source))
            return await self._reload(source)

    async def reload_if_changed(self) -> Reloaded | None:
        """`reload()` if the file's contents differ from what the last reload read (a
        SIGHUP's or `switchyard reload`'s included); None when they do not."""
        async with self._reloading:
            source = self.config.source
            seen = await asyncio.to_thread(_fingerprint_of, Path(source))
            if seen == self._file_seen:
                return None
            self._file_seen = seen
            log.info("config file changed, reloading", path=source)
            return await self._reload(source)

    async def _reload(self, source: str) -> Reloaded:
        try:
            new = await asyncio.to_thread(load_config, source)
            await asyncio.to_thread(check_actors, new)
        except ConfigError as exc:
            return self._refused(exc.issues)
        try:
            held = await self._held_by_removed(new)
        except UNAVAILABLE:
            why = "Redis is unavailable: what a removed class holds cannot be read; try again"
            return self._refused([ConfigIssue("classes", None, why)])
        planned = plan(self.config, new, held)
        if isinstance(planned, list):
            return self._refused(planned)
        if not planned.empty:
            self._apply(new, planned)
        self.metrics.config_reloads.labels("applied").inc()
        log.info("config reloaded", changed=planned.said(), hash=self.config_hash,
                 generation=self.config_generation)  # fmt: skip
        return Reloaded(True, planned.said(), [], self.config_hash, self.config_generation)

    async def _held_by_removed(self, new: Config) -> dict[str, StreamStats]:
        """What each class the new file leaves out still holds, read now (not the stats
        loop's last figures: an event that came since must not be stranded)."""
        gone = [name for name in self.config.classes if name not in new.classes]
        tags = [t for n in gone for t in keys.tags(n, self.config.classes[n].partitions)]
        return per_class(await self.transport.stats(tags)) if tags else {}

    def lanes_now(self) -> dict[str, dict[str, int]]:
        """Per lane of this process: slots used, waiting, reserved."""
        return self.scheduler.snapshot()

    def mqtt_now(self) -> dict[str, Any]:
        """The MQTT ingress, for the console."""
        connected = self.metrics.registry.get_sample_value("switchyard_mqtt_connected")
        url = self.mqtt.url if self.mqtt is not None else None
        return broker_said(url, bool(connected))

    async def _reload_view(self, request: web.Request) -> web.Response:
        """`POST /admin/reload`: 200 applied, 409 refused (with the reasons); admin only."""
        reloaded = await self.reload()
        return web.json_response(reloaded.as_json(), status=200 if reloaded.applied else 409)

    async def watch_config(self) -> None:
        """`service.watch_config`: reload whenever the file's contents change from what the
        last reload read, once per change however it was reloaded."""
        if self._file_seen is None:
            self._file_seen = await asyncio.to_thread(_fingerprint_of, Path(self.config.source))
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            await self.reload_if_changed()

    def _refused(self, issues: list[ConfigIssue]) -> Reloaded:
        self.metrics.config_reloads.labels("refused").inc()
        said = [str(issue) for issue in issues]
        log.warning("config reload refused, the running config is kept", issues=said)
        return Reloaded(False, "nothing", said, self.config_hash, self.config_generation)

    def _apply(self, new: Config, planned: Plan) -> None:
        """Everything at once, with no await: no request sees half of it."""
        old = self.config
        self.addresser.replace(new, Router.from_config(new))
        self.ingest.shedding.configure(new)
        self.config, self.placement = new, Placement(new, self.assignment)
        self._apply_to_pools(planned)
        if self._stats is not None:  # the stats loop and its reports follow the new classes
            self._stats.reconfigure(new)
        local = self.placement.classes()
        everything = max(1, sum(self._capacity_of(name) for name in local))
        self.scheduler.resize(new.service.capacity or everything, self.placement.lanes())
        if self.workers is not None:  # their classes: the lane's workers start again on it
            touched = {*planned.changed, *planned.added, *planned.removed}
            lanes = {(new.classes.get(n) or old.classes[n]).lane for n in touched}
            self.workers.reconfigure(new, self.redis_url, lanes & set(new.isolated_lanes()))
        self.metrics.config_info.clear()
        self.config_generation += 1
        self.config_hash = new.fingerprint()
        self.metrics.config_info.labels(self.config_hash, str(self.config_generation)).set(1)

    def _apply_to_pools(self, planned: Plan) -> None:
        """Changed classes' pools take their settings, removed ones stop (they hold nothing),
        new ones start here, when this process runs their lane."""
        config = self.config
        for name in planned.added:
            self.metrics.declare_class(name, config.classes[name].lane)
            self.windows[name] = SlaWindow()
        for name in [*planned.changed, *planned.added]:
            sla = config.classes[name].sla
            if sla is not None:
                self.metrics.declare_sla(name, sla.target_ms / 1000, sla.objective)
        for tag, pool in list(self.pools.items()):
            if pool.cls in planned.changed:
                pool.reconfigure(planned.changed[pool.cls])
            elif pool.cls in planned.removed:
                pool.stop()
                del self.pools[tag]
        local = self.placement.classes()
        for name in (n for n in planned.added if n in local):
            for tag in keys.tags(name, config.classes[name].partitions):
                self._start_pool(name, tag)

    # --- stop ---

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
            if self.ownership is not None:
                self.ownership.leave()  # starts no more pools; keeps leases until drained
            for pool in self.pools.values():
                pool.stop()  # 2. no new reads, here and in the lane workers
            if self.workers is not None:
                self.workers.stop()
            deadline_s = self.config.service.drain_timeout_s
            pools = list(self._pool_tasks.values())
            drained, self._workers_clean = await asyncio.gather(  # 3. in-flight
                _finished(pools, deadline_s), self._drain_workers(deadline_s)
            )
            if not drained:
                log.warning("drain timeout passed, unfinished entries stay pending for reclaim")
        finally:
            # Even when our caller is cancelled mid-drain, nothing is left running or open.
            await asyncio.shield(self._close(drained))

    async def _close(self, drained: bool) -> None:
        if self._metrics_runner is not None:  # scraped to the end of the drain
            await self._metrics_runner.cleanup()
        await self.supervisor.close()
        if self.workers is not None:
            await self.workers.close()
        if self.ownership is not None:
            with contextlib.suppress(*UNAVAILABLE):  # else the leases expire in a few seconds
                await self.ownership.release()
        if self.redis is not None:  # leave the status table at once, not when the report expires
            consumer = self.transport.consumer
            with contextlib.suppress(*UNAVAILABLE):
                await self.redis.delete(keys.instance(consumer), keys.write_probe(consumer))
                await self.redis.zrem(keys.instances(), consumer)
        if self.notifier is not None:
            await self.notifier.close()
        if self.redis is not None:
            await self.transport.close()
        await self.connection.close()  # 4. connections, then the embedded servers
        await self._broker.close()
        self._stopped.set()
        log.info("switchyard stopped", drained=drained, workers_clean=self._workers_clean)

    async def _stop_mqtt(self) -> None:
        """Stop taking MQTT messages; a batch being written is finished and acknowledged."""
        if self.mqtt is None or self.mqtt_task is None:
            return
        self.mqtt.stop()
        done, _ = await asyncio.wait([self.mqtt_task], timeout=self.config.service.drain_timeout_s)
        if not done:
            self.mqtt_task.cancel()  # unacknowledged messages stay with the broker

    async def _drain_workers(self, deadline_s: float) -> bool:
        """Wait for the lane workers' own drains; True when each exited cleanly."""
        return True if self.workers is None else await self.workers.drain(deadline_s)


async def _finished(tasks: list[asyncio.Task[None]], deadline_s: float) -> bool:
    """Wait up to `deadline_s` for the pools' tasks; True when every one finished."""
    if not tasks:
        return True
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("pool failed", task=task.get_name(), error=repr(task.exception()))
    return not pending


def _access_said(http: HttpConfig) -> str:
    """What the start-up line says of who may use the listener."""
    if http.tokens:
        return "bearer tokens: ingest to post, read for the views, admin for the rest"
    if http.allow_unauthenticated:
        return "open to anyone who reaches it (allow_unauthenticated: true)"
    return "open, on loopback only: set http.tokens to listen further"


WATCH_EVERY_S = 2.0


def _fingerprint_of(path: Path) -> bytes | None:
    """The file's bytes' digest (None while it cannot be read): what a watch compares."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
