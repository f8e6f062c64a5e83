"""The shipped Prometheus rules and the Grafana dashboard against a real Prometheus.

A Switchyard service runs three classes: `slow` (every handler run takes 20 ms against a 5 ms
target: every event is late), `healthy` (handled at once against a 5 s target) and `flaky`
(every fourth event fails twice: retried once, then dead-lettered, which counts as a breach,
while the retry does not count as acked). The real
`prometheus` binary scrapes it every second with a config derived from
deploy/prometheus/prometheus.yml and the shipped deploy/prometheus/alerts.yml, and the tests
read Prometheus's HTTP API: the target is up, the recording rules agree with the service's own
counters, the slow class's burn alerts go pending, and every query of
deploy/grafana/dashboards/switchyard.json is accepted and returns data. The deploy files that
need no server (the local config, the Grafana provisioning, the dashboard's metric names) are
checked without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
import yaml
from helpers import post_accepted, sample
from prometheus_client import CollectorRegistry
from servers import free_port, wait_for

from router.config import parse_config
from router.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import aiohttp
    from helpers import Serve

    from router.config import Config
    from router.service.service import Service

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "switchyard.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "switchyard.yaml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus server is not installed (Debian package)"
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`)"
)
# The service's test actors keep their records in module globals: empty them around each test.
with_actors = pytest.mark.usefixtures("probes", "steered_runs")

SLOW, HEALTHY, FLAKY = "slow", "healthy", "flaky"
CLASSES = (SLOW, HEALTHY, FLAKY)
OBJECTIVE = {SLOW: 0.99, HEALTHY: 0.99, FLAKY: 0.9}
WINDOWS = ("5m", "30m", "1h", "6h")
FLAKY_EVERY = 4  # every 4th flaky event fails: an error ratio of 1/4, burn 2.5 on a 10% budget

# Metrics a process exports only with the feature on (MQTT), or only once something happened
# (no label values declared up front): a dashboard query on them may find no series here.
CONDITIONAL = {
    "switchyard_mqtt_connected",
    "switchyard_mqtt_messages_total",
    "switchyard_events_shed_total",
    "switchyard_redis_errors_total",
}


def service_config(redis_url: str) -> Config:
    return parse_config(f"""
service: {{drain_timeout_s: 5}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
mqtt: {{url: "off"}}
lanes: [{{name: high}}, {{name: low}}]
routes:
  - {{topic: "{SLOW}/+", class: {SLOW}, key: key}}
  - {{topic: "{HEALTHY}/+", class: {HEALTHY}, key: key}}
  - {{topic: "{FLAKY}/+", class: {FLAKY}, key: key}}
classes:
  {SLOW}:
    lane: high
    actor: actors_for_tests:Steered
    concurrency: 4
    sla: {{target_ms: 5, objective: {OBJECTIVE[SLOW]}}}
    options: {{name: {SLOW}, sleep_s: 0.02}}
  {HEALTHY}:
    lane: high
    actor: actors_for_tests:Recorder
    concurrency: 4
    sla: {{target_ms: 5000, objective: {OBJECTIVE[HEALTHY]}}}
    options: {{name: {HEALTHY}}}
  {FLAKY}:
    lane: low
    actor: actors_for_tests:Recorder
    concurrency: 4
    sla: {{target_ms: 5000, objective: {OBJECTIVE[FLAKY]}}}
    retry: {{max_attempts: 2, backoff_ms: 10, jitter: 0}}
    options: {{name: {FLAKY}}}
""")


def prometheus_config(service_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, scraping the test's service and evaluating every 1 s,
    with its rule files (the shipped alerts.yml) by absolute path."""
    shipped: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    [job] = shipped["scrape_configs"]
    assert job["job_name"] == "switchyard"  # what every rule in alerts.yml selects
    return {
        **shipped,
        "global": {
            **shipped["global"],
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(PROMETHEUS_DIR / path) for path in shipped["rule_files"]],
        "scrape_configs": [{**job, "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}]}],
    }


@dataclass
class Stack:
    """The service, the Prometheus scraping it, and the feed of events to the three classes."""

    service: Service
    http: aiohttp.ClientSession
    url: str  # Prometheus's, http://127.0.0.1:<port>
    log: Path  # Prometheus's output
    feeder: asyncio.Task[None] | None = None
    stop_feeding: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.service.http_port}"

    async def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful Prometheus API answer."""
        async with self.http.get(f"{self.url}{path}", params=params) as response:
            body: Any = await response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = await self.api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    async def by_class(self, expr: str) -> dict[str, float]:
        return {row["metric"]["class"]: float(row["value"][1]) for row in await self.query(expr)}

    async def alert_states(self) -> dict[tuple[str, str | None], str]:
        """(alertname, class) -> pending or firing, for every active alert."""
        alerts = (await self.api("/api/v1/alerts"))["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("class")): a["state"] for a in alerts}

    def start_feed(self) -> None:
        self.feeder = asyncio.create_task(
            feed(self.http, self.service, self.stop_feeding), name="feed"
        )

    async def stop_feed(self) -> None:
        """Stop the events (and raise what the feed raised, a refused POST say)."""
        self.stop_feeding.set()
        if self.feeder is not None:
            await self.feeder

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


async def feed(http: aiohttp.ClientSession, service: Service, stop: asyncio.Event) -> None:
    """An event to each class every 50 ms until `stop`; every 4th flaky one asks to fail."""
    n = 0
    while not stop.is_set():
        for cls in CLASSES:
            body: dict[str, Any] = {"key": f"k{n % 8}", "n": n}
            if cls == FLAKY and n % FLAKY_EVERY == FLAKY_EVERY - 1:
                body["fail"] = "flaky on purpose"
            await post_accepted(http, service, f"{cls}/1", body)
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)  # the pace of the feed, not a wait for state


@pytest_asyncio.fixture
async def stack(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> AsyncIterator[Stack]:
    """The service and a real Prometheus scraping it; events flow once Prometheus has scraped
    the classes' counters at zero. Prometheus is killed at the end, whatever happened."""
    assert PROMETHEUS is not None
    async with serve(service_config(redis_url)) as service:
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(service.http_port)))
        port = free_port()
        log = tmp_path / "prometheus.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        stack = Stack(service, http, f"http://127.0.0.1:{port}", log)
        try:

            async def ready() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"prometheus exited:\n{stack.log_tail()}")
                with contextlib.suppress(OSError):
                    async with http.get(f"{stack.url}/-/ready") as response:
                        return response.status == 200
                return False

            await wait_for(ready, timeout=30, interval=0.1, message="prometheus ready")

            # A first sample of every class's counters at 0, before any event: the rates over
            # all windows then cover every event, and the recorded ratios are exactly the
            # service's totals' ratios.
            async def scraped_at_zero() -> bool:
                found = await stack.by_class('switchyard_sla_breaches_total{job="switchyard"}')
                return found == dict.fromkeys(CLASSES, 0.0)

            await wait_for(scraped_at_zero, timeout=20, interval=0.2, message="first scrape")
            stack.start_feed()
            yield stack
        finally:
            stack.stop_feeding.set()
            if process.returncode is None:
                process.kill()
            await process.wait()
            if stack.feeder is not None:
                await asyncio.wait([stack.feeder])
                if stack.feeder.exception() is not None:  # a refused POST, say: fail the test
                    raise AssertionError("the feed of events failed") from stack.feeder.exception()


def acked(service: Service, cls: str) -> float:
    """Events of `cls` acked for good (ok or dead), as the service counted them."""
    return sum(
        sample(service, "switchyard_events_processed_total", {"class": cls, "outcome": outcome})
        for outcome in ("ok", "dead")
    )


def breaches(service: Service, cls: str) -> float:
    return sample(service, "switchyard_sla_breaches_total", {"class": cls})


def settled(service: Service) -> bool:
    """Every event posted so far has been acked for good."""
    return all(
        acked(service, cls)
        == sample(service, "switchyard_events_ingested_total", {"class": cls, "source": "http"})
        for cls in CLASSES
    )


async def agree(read: Any, expected: dict[str, float], timeout: float = 15) -> None:  # noqa: ASYNC109
    """Wait until `read()` (per-class values) matches `expected`, then assert it does (the
    assertion shows the difference when it never did)."""

    async def matches() -> bool:
        found: dict[str, float] = await read()
        return found == pytest.approx(expected, rel=1e-6, abs=1e-9)

    with contextlib.suppress(AssertionError):
        await wait_for(matches, timeout=timeout, interval=0.25)
    assert await read() == pytest.approx(expected, rel=1e-6, abs=1e-9)


@needs_prometheus
@pytest.mark.integration
@with_actors
async def test_shipped_rules_agree_with_the_service_and_a_breach_raises_the_burn_alerts(
    stack: Stack,
) -> None:
    targets = (await stack.api("/api/v1/targets"))["activeTargets"]
    assert [(t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in targets] == [
        ("switchyard", stack.target, "up")
    ], stack.log_tail()

    # The slow class burns its budget 100x (every event late, 1% allowed): both burn alerts go
    # pending at once (their `for:` of 2m and 15m then has to pass before they fire). The flaky
    # class's dead letters fire SwitchyardDeadLetters, which has no `for:`.
    async def alerting() -> dict[tuple[str, str | None], str]:
        states = await stack.alert_states()
        wanted = [
            ("SwitchyardSLABudgetBurnFast", SLOW),
            ("SwitchyardSLABudgetBurnSlow", SLOW),
            ("SwitchyardDeadLetters", FLAKY),
        ]
        return states if all(key in states for key in wanted) else {}

    states = await wait_for(alerting, timeout=30, interval=0.5, message="burn alerts on slow")
    assert states[("SwitchyardSLABudgetBurnFast", SLOW)] in {"pending", "firing"}
    assert states[("SwitchyardSLABudgetBurnSlow", SLOW)] in {"pending", "firing"}
    assert states[("SwitchyardDeadLetters", FLAKY)] == "firing"
    # A 25% error ratio on a 10% budget burns 2.5x: under both thresholds; healthy burns 0.
    burning = {cls for (name, cls) in states if name.startswith("SwitchyardSLABudgetBurn")}
    assert burning == {SLOW}, states
    [fast] = [
        alert
        for alert in (await stack.api("/api/v1/alerts"))["alerts"]
        if alert["labels"]["alertname"] == "SwitchyardSLABudgetBurnFast"
    ]
    assert fast["labels"]["severity"] == "critical"
    assert float(fast["value"]) == pytest.approx(1 / (1 - OBJECTIVE[SLOW]), rel=1e-6)

    # Stop the events, let the service finish them and Prometheus scrape the final counters.
    await stack.stop_feed()
    service = stack.service
    await wait_for(lambda: settled(service), timeout=20, message="every event acked")
    total_breaches = {cls: breaches(service, cls) for cls in CLASSES}
    total_acked = {cls: acked(service, cls) for cls in CLASSES}
    assert total_breaches[SLOW] == total_acked[SLOW] > 0
    assert total_breaches[HEALTHY] == 0 < total_acked[HEALTHY]
    assert 0 < total_breaches[FLAKY] < total_acked[FLAKY]
    # Each dead flaky event was retried once first: a rule counting retries as acked would
    # dilute the error ratio, and miss the values below.
    retried = {"class": FLAKY, "outcome": "retried"}
    assert sample(service, "switchyard_events_processed_total", retried) == total_breaches[FLAKY]
    await agree(
        lambda: stack.by_class('sum by (class) (switchyard_sla_breaches_total{job="switchyard"})'),
        total_breaches,
    )
    await agree(
        lambda: stack.by_class(
            "sum by (class) "
            '(switchyard_events_processed_total{job="switchyard",outcome=~"ok|dead"})'
        ),
        total_acked,
    )

    # Every window holds every sample (the first at 0), so each window's recorded error ratio
    # is the service's breaches over acked, and its burn rate that over 1 - objective.
    ratio = {cls: total_breaches[cls] / total_acked[cls] for cls in CLASSES}
    budget = {cls: 1 - OBJECTIVE[cls] for cls in CLASSES}
    burn = {cls: ratio[cls] / budget[cls] for cls in CLASSES}
    assert ratio[FLAKY] == pytest.approx(1 / FLAKY_EVERY, abs=0.1)
    await agree(lambda: stack.by_class("class:switchyard_sla_error_budget:ratio"), budget)
    for window in WINDOWS:

        def recorded(name: str, window: str = window) -> Any:
            return lambda: stack.by_class(f"class:switchyard_{name}:rate{window}")

        acked_rates = await recorded("events_acked")()
        assert set(acked_rates) == set(CLASSES), acked_rates
        assert all(rate > 0 for rate in acked_rates.values()), (window, acked_rates)
        await agree(recorded("sla_error_ratio"), ratio)
        await agree(recorded("sla_budget_burn"), burn)

    # The service's own rolling 5-minute compliance gauge tells the same story.
    await agree(
        lambda: stack.by_class(
            'min by (class) (switchyard_sla_compliance_ratio{job="switchyard"})'
        ),
        {cls: 1 - ratio[cls] for cls in CLASSES},
    )
    # The backlog alert's limit: 5x each class's SLA target.
    await agree(
        lambda: stack.by_class("class:switchyard_oldest_pending_limit:seconds"),
        {SLOW: 5 * 0.005, HEALTHY: 5 * 5.0, FLAKY: 5 * 5.0},
    )


# --- the Grafana dashboard ---------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too; rows themselves left out."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every target, with Grafana's variables filled in as
    the test's queries run them: every class, a 1m rate interval."""
    queries = []
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$class", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
            )
            queries.append((f"{panel['title']} [{target['refId']}]", expr))
    return queries


METRIC_NAME = re.compile(r"\b(?:switchyard_\w+|class:[\w:]+|ALERTS|up)\b")


def metric_names(expr: str) -> set[str]:
    """The series names an expression reads: Switchyard's, the recorded ones, ALERTS and up."""
    return set(METRIC_NAME.findall(expr))


@needs_prometheus
@pytest.mark.integration
@with_actors
async def test_every_dashboard_query_runs_on_the_real_prometheus_and_finds_the_classes(
    stack: Stack,
) -> None:
    # Wait for the slow class's burn alert, so ALERTS has series as well.
    async def burning() -> bool:
        return ("SwitchyardSLABudgetBurnFast", SLOW) in await stack.alert_states()

    await wait_for(burning, timeout=30, interval=0.5, message="the burn alert on slow")

    # The $class variable: label_values(<selector>, class) is Grafana's call of this API.
    [variable] = dashboard()["templating"]["list"]
    call = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
    assert call is not None, variable["definition"]
    selector, label = call.groups()
    values = await stack.api(f"/api/v1/label/{label}/values", **{"match[]": selector})
    assert set(CLASSES) <= set(values), values

    async def classes_of(name: str) -> set[str] | None:
        """The `class` values of series `name` here (empty: no class label), None: no series."""
        rows = await stack.query(f'group by (class) ({{__name__="{name}"}})')
        return (
            {row["metric"]["class"] for row in rows if "class" in row["metric"]} if rows else None
        )

    absent: set[str] = set()
    for title, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{title}: reads no Switchyard series: {expr}"
        found = {name: await classes_of(name) for name in names}
        missing = {name for name, classes in found.items() if classes is None}
        if missing:
            await stack.query(expr)  # accepted without data: a syntax error would fail here too
            absent |= missing
            continue
        # Every test class that each class-labelled series read has must come out of the query.
        # (Nothing expected of a query on series without a class label: lanes, MQTT, up.)
        labelled = [classes for classes in found.values() if classes]
        expected = set(CLASSES).intersection(*labelled) if labelled else set()

        async def answers(expr: str = expr, expected: set[str] = expected) -> bool:
            result = await stack.query(expr)
            return bool(result) and expected <= {row["metric"].get("class") for row in result}

        with contextlib.suppress(AssertionError):
            await wait_for(answers, timeout=10, interval=0.5)
        result = await stack.query(expr)
        assert result, f"{title}: no data for {expr}"
        assert expected <= {row["metric"].get("class") for row in result}, (title, expr, result)
    # Only series this service does not export (MQTT off, nothing shed, no Redis error) may be
    # missing: a misspelt name would be missing too, and fail here.
    assert absent <= CONDITIONAL, absent - CONDITIONAL


def exported_names() -> set[str]:
    """Every series name a Switchyard process can export, every optional feature turned on."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.enable_mqtt()
    metrics.enable_media()
    metrics.enable_workers(["high"])
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"]}
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }


def recorded_names() -> set[str]:
    rules: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }


def test_dashboard_reads_only_series_that_exist_and_the_provisioned_datasource() -> None:
    known = exported_names() | recorded_names() | {"ALERTS", "up"}
    assert known >= CONDITIONAL
    board = dashboard()
    datasources: dict[str, Any] = yaml.safe_load(DATASOURCES.read_text())
    [datasource] = datasources["datasources"]
    assert (datasource["name"], datasource["type"], datasource["url"]) == (
        "Prometheus",
        "prometheus",
        "http://prometheus:9090",
    )
    expected_source = {"type": "prometheus", "uid": datasource["uid"]}

    all_panels = list(panels(board))
    assert len({panel["id"] for panel in all_panels}) == len(all_panels)
    for panel in all_panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == expected_source, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected_source, panel["title"]
            unknown = metric_names(target["expr"]) - known
            assert not unknown, f"{panel['title']}: {unknown}"
    read = {
        name for panel in all_panels for t in panel["targets"] for name in metric_names(t["expr"])
    }
    # The questions of on-call: burn, breaches, queue wait vs handler, backlog, oldest entry,
    # lanes, dead letters, MQTT, ingest and processed rates.
    assert {
        "class:switchyard_sla_budget_burn:rate5m",
        "switchyard_sla_compliance_ratio",
        "switchyard_sla_breaches_total",
        "switchyard_queue_wait_seconds_bucket",
        "switchyard_handler_seconds_bucket",
        "switchyard_stream_backlog",
        "switchyard_stream_oldest_pending_seconds",
        "switchyard_lane_inflight",
        "switchyard_lane_waiting",
        "switchyard_dead_letters",
        "switchyard_mqtt_connected",
        "switchyard_mqtt_messages_total",
        "switchyard_events_ingested_total",
        "switchyard_events_processed_total",
    } <= read

    [variable] = board["templating"]["list"]
    assert variable["name"] == "class"
    assert variable["datasource"] == expected_source
    assert variable["definition"].startswith("label_values(")
    assert (variable["includeAll"], variable["allValue"]) == (True, ".*")

    providers: dict[str, Any] = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --- the local Prometheus for `make run` -------------------------------------------------------


def test_local_prometheus_config_scrapes_make_run_and_loads_the_alerts() -> None:
    local: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "local.yml").read_text())
    assert local["global"]["scrape_interval"] == local["global"]["evaluation_interval"] == "5s"
    assert [(PROMETHEUS_DIR / path).resolve() for path in local["rule_files"]] == [
        (PROMETHEUS_DIR / "alerts.yml").resolve()
    ]
    [job] = local["scrape_configs"]
    assert job["job_name"] == "switchyard"  # what every rule in alerts.yml selects
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]


@needs_promtool
def test_local_prometheus_config_passes_promtool() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", "deploy/prometheus/local.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
