"""The config's typed models: every section of the file, unknown keys refused."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from router.config.syntax import parse_ref, parse_template, validate_topic_filter

if TYPE_CHECKING:
    from collections.abc import Mapping

YamlPath = tuple[str | int, ...]

CLASS_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServiceConfig(_Model):
    """Process-wide settings."""

    name: str = "switchyard"
    drain_timeout_s: float = Field(10.0, gt=0)
    max_event_bytes: int = Field(65_536, gt=0)
    max_batch_events: int = Field(1_000, gt=0)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)  # one HTTP body, after decompression
    # Every dead-letter stream (each class's, _unrouted, _rejected) keeps at most this many
    # entries, none older than this; retention counts what it cuts.
    dead_letter_max_len: int = Field(100_000, ge=1)
    dead_letter_max_age_s: float = Field(7 * 86_400, gt=0)
    log_format: Literal["auto", "json", "pretty"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    dedup_window_s: float = Field(600.0, gt=0)
    capacity: int | None = Field(None, ge=1)  # in-flight entries across classes; None: no cap
    # Every process beats into Redis each `heartbeat_s`; one silent for `member_timeout_s`
    # counts as gone: its ordered partitions and its pending entries move to the others.
    # The event loop: `auto` is uvloop where it is installed, else asyncio's own.
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # Reload when the config file changes (checked every few seconds), besides SIGHUP and
    # `switchyard reload`.
    watch_config: bool = False
    heartbeat_s: float = Field(0.5, gt=0, le=60)
    member_timeout_s: float = Field(2.5, gt=0, le=600)

    @model_validator(mode="after")
    def _beats_before_timeout(self) -> ServiceConfig:
        if self.member_timeout_s < 3 * self.heartbeat_s:
            raise ValueError(
                "member_timeout_s must be at least three heartbeats (3 x heartbeat_s), so one "
                "slow beat does not make a live process look gone"
            )
        return self


class RedisConfig(_Model):
    """Where the streams live. `url: embedded` starts a private redis-server in `data_dir`."""

    url: str = "embedded"
    data_dir: Path = Path(".switchyard/redis")
    group: str = "switchyard"
    max_connections: int = Field(64, ge=4)
    block_ms: int = Field(500, ge=10, le=10_000)
    stats_interval_s: float = Field(2.0, gt=0)
    # AUTH's password, where the URL has none (`password_file`: read from a file instead);
    # TLS to a rediss:// server: the CA that signed it, and a client certificate if it asks.
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _tls_for_rediss(self) -> RedisConfig:
        tls = [name for name in ("ca_file", "cert_file", "key_file") if getattr(self, name)]
        if tls and not self.url.startswith("rediss"):
            raise ValueError(f"{', '.join(tls)}: for a rediss:// URL (TLS) only")
        return self

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if url != "embedded" and not url.startswith(schemes):
            raise ValueError(
                "must be 'embedded', a redis://, rediss:// or unix:// URL, or a Redis Cluster's "
                "redis+cluster://host:port,host:port"
            )
        return url


LOOPBACK = ("127.0.0.1", "::1", "localhost")
ROLES = ("ingest", "read", "admin")  # admin may do all; read, the views; ingest, post events


class TokenConfig(_Model):
    """A bearer token, named for the source that holds it. Never in the file in clear: its
    SHA-256 (`sha256`), or the variable (`env`) or file (`file`, as a mounted secret) that
    holds it. `topics`: the MQTT-style filters an ingest token may post to."""

    name: str = Field(min_length=1, max_length=64)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    env: str | None = Field(None, min_length=1)
    file: Path | None = None
    role: Literal["ingest", "read", "admin"] = "ingest"
    topics: list[str] = Field(default_factory=lambda: ["#"], min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> TokenConfig:
        given = [name for name in ("sha256", "env", "file") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give the token as exactly one of sha256, env or file")
        return self

    @field_validator("topics")
    @classmethod
    def _filters(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            validate_topic_filter(topic)
        return topics


class HttpConfig(_Model):
    """The HTTP ingress and the views, who may use them, and how long a client may take."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65_535)
    tokens: list[TokenConfig] = Field(default_factory=list)
    # With no tokens the listener is open: it must then be on loopback, unless this says so.
    allow_unauthenticated: bool = False
    # A second listener for Prometheus: /metrics, /healthz and /readyz, open, on a private
    # address; without it, /metrics is on the main listener, behind a read token if any.
    metrics_host: str | None = None
    metrics_port: int | None = Field(None, ge=0, le=65_535)
    header_timeout_s: float = Field(10.0, gt=0)  # a request's line and headers, whole
    body_timeout_s: float = Field(30.0, gt=0)  # a request's body (not a media upload's)
    idle_timeout_s: float = Field(15.0, gt=0)  # a kept-alive connection between requests
    # Open at once per client address: a gateway or a load balancer is one address for many
    # devices, so the default leaves room for them.
    max_connections_per_client: int = Field(1024, ge=1)
    metrics_every_s: float = Field(1.0, gt=0)  # /metrics rendered at most this often, shared
    # HTTPS on the main listener; with `client_ca_file`, only clients with a certificate
    # that CA signed get in (mutual TLS).
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_whole(self) -> HttpConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        if self.client_ca_file and not self.cert_file:
            raise ValueError("client_ca_file (mutual TLS) needs cert_file and key_file")
        return self

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> HttpConfig:
        if not self.tokens and not self.allow_unauthenticated and self.host not in LOOPBACK:
            raise ValueError(
                f"host {self.host} is not loopback and no tokens are set: anyone who reaches "
                "it could post and read; add http.tokens, or say allow_unauthenticated: true"
            )
        names = [token.name for token in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("every token needs a name of its own")
        return self


class MqttConfig(_Model):
    """The MQTT ingress. `url: embedded` starts a private broker; `off` runs without MQTT."""

    url: str = "off"
    client_id: str = "switchyard"
    protocol: Literal["5", "3.1.1"] = "5"
    qos: Literal[0, 1, 2] = 1
    subscriptions: list[str] = Field(default_factory=list)
    shared_group: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    inflight: int = Field(256, ge=1, le=65_535)
    session_expiry_s: int = Field(86_400, ge=0)
    keepalive_s: int = Field(30, ge=5)
    data_dir: Path = Path(".switchyard/mqtt")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if url not in ("off", "embedded") and not url.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must be 'off', 'embedded' or an mqtt:// or mqtts:// URL")
        return url

    @field_validator("subscriptions")
    @classmethod
    def _filters(cls, subscriptions: list[str]) -> list[str]:
        for topic_filter in subscriptions:
            validate_topic_filter(topic_filter)
        return subscriptions

    @field_validator("shared_group")
    @classmethod
    def _group_name(cls, group: str | None) -> str | None:
        if not group:
            return None  # empty (e.g. an unset variable) means no shared subscription
        if any(c in group for c in "/+#"):
            raise ValueError("a shared subscription group is one topic level without + or #")
        return group

    @property
    def enabled(self) -> bool:
        return self.url != "off"


class LaneConfig(_Model):
    """A priority lane; lanes are listed highest priority first.

    `min_share` of the process's in-flight capacity is kept for the lane when it has work, so
    it never starves; `max_wait_ms` admits its work ahead of every lane once it waited that long.
    `workers: N` runs the lane's pools in N child processes instead of the service's own, so a
    CPU-heavy lane cannot slow the others down (0: in the service process).
    """

    name: str = Field(pattern=CLASS_NAME.pattern)  # letters, digits, `_.-`; no leading `_`
    min_share: float = Field(0.0, ge=0, le=1)
    max_wait_ms: int | None = Field(None, ge=1)
    workers: int = Field(0, ge=0, le=64)


class SlaConfig(_Model):
    """A latency target (ingest to ack) and the share of events that must meet it."""

    target_ms: float = Field(gt=0)
    objective: float = Field(0.99, gt=0, le=1)


class BatchConfig(_Model):
    """Batch mode: hand over up to `max_size` events, or fewer once `max_wait_ms` has passed."""

    max_size: int = Field(100, ge=1, le=10_000)
    max_wait_ms: int = Field(1_000, ge=1)


class RetryConfig(_Model):
    """Failed handlers run again after an exponential, jittered delay, up to `max_attempts` runs."""

    max_attempts: int = Field(3, ge=1, le=100)
    backoff_ms: int = Field(1_000, ge=1)
    max_backoff_ms: int = Field(60_000, ge=1)
    jitter: float = Field(0.2, ge=0, le=1)

    def delay_s(self, failures: int, unit_random: float) -> float:
        """The wait before the run after `failures` failed runs; `unit_random` in [0, 1)."""
        base: float = min(self.max_backoff_ms, self.backoff_ms * 2 ** (failures - 1)) / 1000
        return base * (1 - self.jitter + 2 * self.jitter * unit_random)


class ShedConfig(_Model):
    """Opt-in load shedding: past a backlog or an age, refuse new events or expire old ones."""

    max_backlog: int | None = Field(None, ge=1)
    max_age_ms: int | None = Field(None, ge=1)
    action: Literal["refuse", "expire"] = "refuse"

    def model_post_init(self, context: Any, /) -> None:
        if self.max_backlog is None and self.max_age_ms is None:
            raise ValueError("give max_backlog, max_age_ms or both")
        if self.action == "expire" and self.max_age_ms is None:
            raise ValueError("action: expire needs max_age_ms")


class ClassConfig(_Model):
    """One event class: its lane, actor, processing mode, concurrency, SLA and failure policy."""

    lane: str
    actor: str
    mode: Literal["stream", "queue", "batch"] = "queue"
    concurrency: int = Field(8, ge=1, le=10_000)
    batch: BatchConfig | None = None
    sla: SlaConfig | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)
    timeout_ms: int | None = Field(None, ge=1)
    claim_idle_ms: int = Field(60_000, ge=100)
    max_deliveries: int = Field(5, ge=1)
    max_len: int | None = Field(None, ge=1)
    # Streams the class is split into by its key (a stable hash): they spread over a Redis
    # Cluster's nodes, and each is consumed on its own. `concurrency` applies per partition.
    partitions: int = Field(1, ge=1, le=1024)
    shed: ShedConfig | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("actor")
    @classmethod
    def _import_path(cls, actor: str) -> str:
        module, sep, name = actor.partition(":")
        if not sep or not module or not name.isidentifier():
            raise ValueError("must be an import path like 'actors.clinic:Registration'")
        return actor

    @property
    def batch_or_default(self) -> BatchConfig:
        return self.batch or BatchConfig()

    @property
    def batch_size(self) -> int:
        """Entries one unit of work takes: a whole batch in batch mode, else one."""
        return self.batch_or_default.max_size if self.mode == "batch" else 1

    @property
    def ordered(self) -> bool:
        """Events of one key are handled one at a time, in order, across instances too: each
        partition has one consumer at a time, by lease."""
        return self.mode == "stream"

    @property
    def capacity(self) -> int:
        """Entries the class's pool may hold in flight."""
        return self.concurrency * self.batch_size


class FieldMatch(_Model):
    """One condition: exactly one of `equals`, `in` or `exists`."""

    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in", min_length=1)
    exists: bool | None = None

    def model_post_init(self, context: Any, /) -> None:
        given = self.model_fields_set & {"equals", "in_", "exists"}
        if len(given) != 1:
            raise ValueError("give exactly one of 'equals', 'in' or 'exists'")

    def condition(self) -> tuple[str, Any]:
        """The condition as (kind, value)."""
        if "equals" in self.model_fields_set:
            return "equals", self.equals
        if self.in_ is not None:
            return "in", tuple(self.in_)
        return "exists", self.exists

    def options(self) -> list[Any] | None:
        """The values this condition allows, when it pins them down."""
        kind, value = self.condition()
        if kind == "equals":
            return [value]
        return list(value) if kind == "in" else None


class RouteConfig(_Model):
    """A routing rule: topic filter and payload conditions to event class and key."""

    name: str | None = None
    topic: str
    match: dict[str, FieldMatch] = Field(default_factory=dict)
    class_: str = Field(alias="class")
    key: str | None = None

    _check_topic = field_validator("topic")(classmethod(lambda cls, v: validate_topic_filter(v)))

    @field_validator("match")
    @classmethod
    def _refs(cls, match: dict[str, FieldMatch]) -> dict[str, FieldMatch]:
        for ref in match:
            parse_ref(ref)
        return match

    @field_validator("key")
    @classmethod
    def _key_ref(cls, key: str | None) -> str | None:
        if key is not None:
            parse_ref(key)
        return key

    @field_validator("class_")
    @classmethod
    def _template(cls, text: str) -> str:
        parse_template(text)
        return text


class NotifyConfig(_Model):
    """Alerts to device owners: the webhook's signing secret, how long one delivery may take,
    and whether alerts also go out on the MQTT back-channel."""

    webhook_secret: str = ""  # HMAC-SHA256 key; from the environment, never in the file
    timeout_ms: int = Field(2000, gt=0)
    backchannel: bool = True


class FleetConfig(_Model):
    """A workload's devices watched for silence: the classes whose events are a device
    reporting (their key is the device id), how often a device is expected to report (its
    registered `interval_s` wins), after how many silent intervals it is offline, and how
    often that is checked."""

    classes: list[str] = Field(min_length=1)
    interval_s: float = Field(60.0, gt=0)
    offline_after: float = Field(3.0, ge=1)
    check_every_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _checked_often_enough(self) -> FleetConfig:
        # Reports reach Redis once a check: an allowance shorter than two checks would call
        # a device that reported offline before its report was written.
        if self.offline_after * self.interval_s < 2 * self.check_every_s:
            raise ValueError(
                "offline_after x interval_s must be at least twice check_every_s, or a device "
                "that reported could be called offline before its report was written"
            )
        return self


class AnalyticsConfig(_Model):
    """A workload's analytics: the provider (`module:Class`, like an actor) and its options."""

    provider: str
    options: dict[str, Any] = Field(default_factory=dict)


MEDIA_LEVEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # no leading dot: hidden
_MEDIA_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class MediaUploadConfig(_Model):
    """Where clips may be PUT and the event each stored clip is announced by.

    `path` is levels under /media/, `+` for any one, the last one the clip's name (so `+`);
    `topic` is the event's topic: `{N}` is level N of the clip's path (from 0), `{kind}` is
    `video` or `audio`, from the clip's Content-Type.
    """

    path: str
    topic: str

    @field_validator("path")
    @classmethod
    def _levels(cls, path: str) -> str:
        levels = path.split("/")
        if len(levels) < 2 or levels[-1] != "+":
            raise ValueError("at least two levels, the last one `+` (the clip's name)")
        for level in levels:
            if level != "+" and not MEDIA_LEVEL.match(level):
                raise ValueError(f"level {level!r}: `+`, or letters, digits and `_.-`")
        return path

    @model_validator(mode="after")
    def _placeholders(self) -> MediaUploadConfig:
        levels = len(self.path.split("/"))
        for name in _MEDIA_PLACEHOLDER.findall(self.topic):
            if name != "kind" and not (name.isdigit() and int(name) < levels):
                last = levels - 1
                raise ValueError(f"topic placeholder {{{name}}}: {{kind}} or {{0}}..{{{last}}}")
        if any(c in self.topic for c in "+#"):
            raise ValueError("the topic is one topic, without + or #")
        return self


class MediaConfig(_Model):
    """Clips PUT over HTTP into an object store (a path, file:// or s3:// URL), served back
    with Range requests, announced by an event once stored, deleted after `retention_s`.

    Every `sweep_every_s` (and at start) the store is swept: clips past retention are deleted,
    and a clip stored whose event was never written (a crash in between) gets it written once
    it has waited `recover_after_s` (an upload still finishing elsewhere is left alone).
    """

    store: str = ".switchyard/media"
    max_bytes: int = Field(1 << 30, gt=0)  # one clip: 413 past it, nothing kept
    retention_s: float = Field(30 * 86_400, gt=0)
    sweep_every_s: float = Field(60.0, gt=0)
    recover_after_s: float = Field(600.0, ge=0)
    uploads: list[MediaUploadConfig] = Field(default_factory=list)

    @field_validator("store")
    @classmethod
    def _store_url(cls, store: str) -> str:
        scheme = store.partition("://")[0] if "://" in store else ""
        if not store or scheme not in ("", "file", "s3"):
            raise ValueError("a path, a file:// URL or s3://bucket/prefix")
        return store


SHARED_SECTIONS = {"lanes", "routes", "classes", "analytics", "media", "notify", "fleet"}


class Config(_Model):
    """The whole file."""

    service: ServiceConfig = Field(default_factory=ServiceConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    lanes: list[LaneConfig] = Field(min_length=1)
    routes: list[RouteConfig] = Field(default_factory=list)
    classes: dict[str, ClassConfig] = Field(min_length=1)
    analytics: dict[str, AnalyticsConfig] = Field(default_factory=dict)  # by workload name
    media: MediaConfig | None = None  # clips over HTTP, kept in an object store
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    fleet: dict[str, FleetConfig] = Field(default_factory=dict)  # by workload name

    _lines: dict[YamlPath, int] = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr(default="<config>")
    _file_digest: bytes | None = PrivateAttr(default=None)

    def line_of(self, path: YamlPath) -> int | None:
        """The YAML line of `path`, or of its closest parent that has one."""
        return line_of(self._lines, path)

    @property
    def source(self) -> str:
        return self._source

    @property
    def file_digest(self) -> bytes | None:
        """The SHA-256 of the bytes this config was read from (None if not from a file): a
        watch compares the file with it, so an edit made while the service starts is seen."""
        return self._file_digest

    def fingerprint(self) -> str:
        """A short hash of what every instance must agree on: lanes, routes, classes and the
        workloads' settings (not how the file is laid out, nor where this one instance
        connects or listens: its ports, URLs and client ids may differ)."""
        shared = self.model_dump(mode="json", by_alias=True, include=SHARED_SECTIONS)
        text = json.dumps(shared, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def lane_names(self) -> list[str]:
        return [lane.name for lane in self.lanes]

    def isolated_lanes(self) -> dict[str, int]:
        """Lanes run by worker processes of their own, with how many each."""
        return {lane.name: lane.workers for lane in self.lanes if lane.workers}

    def classes_by_lane(self) -> list[tuple[str, ClassConfig]]:
        """Classes in lane priority order, then by name: how every table lists them."""
        order = {lane: index for index, lane in enumerate(self.lane_names())}
        return sorted(self.classes.items(), key=lambda item: (order[item[1].lane], item[0]))


def line_of(lines: Mapping[YamlPath, int], path: YamlPath) -> int | None:
    path = tuple(p for p in path if p != "in_")
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
