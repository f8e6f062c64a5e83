"""Lane workers: a lane's pools in child processes, behind the service's one HTTP endpoint.

The workers' actor appends every handled event id to a Redis stream, since it runs in another
process. The merge of several processes' metrics is tested on its own, without processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter as Tally
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import Serve, pending, post_accepted, processed, sample
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from servers import ServiceProcess, process_alive, wait_for

from router.cli.check import summary
from router.config import Config, parse_config
from router.errors import ConfigError
from router.ops.exposition import lasting, merge, parse, render
from router.service.lane_workers import Assignment, Worker
from router.service.service import Service

if TYPE_CHECKING:
    import aiohttp
    from redis.asyncio import Redis

HANDLED = "test:handled"
TESTS_DIR = Path(__file__).resolve().parent
PROMTOOL = shutil.which("promtool")


def lane_config(
    redis_url: str, *, workers: int = 2, actor: str = "actors.builtin:Forward", options: str = ""
) -> Config:
    return parse_config(lane_yaml(redis_url, workers=workers, actor=actor, options=options))


def lane_yaml(
    redis_url: str, *, workers: int = 2, actor: str = "actors.builtin:Forward", options: str = ""
) -> str:
    """`work/<n>` events go to class `work` in lane `low`, run by `workers` worker processes."""
    return f"""
service: {{drain_timeout_s: 10, log_format: json}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
lanes: [{{name: high}}, {{name: low, workers: {workers}}}]
routes:
  - {{topic: work/+, class: work, key: key}}
  - {{topic: here/+, class: here}}
classes:
  here: {{lane: high, actor: "actors.builtin:Log"}}
  work:
    lane: low
    actor: "{actor}"
    concurrency: 4
    claim_idle_ms: 300
    options: {{stream: "{HANDLED}"{options}}}
"""


async def handled_count(redis: Redis, expected: int) -> bool:
    return int(await redis.xlen(HANDLED)) == expected


async def handled_ids(redis: Redis) -> list[str]:
    entries: Any = await redis.xrange(HANDLED)
    return [fields[b"id"].decode() for _, fields in entries]


async def get_text(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


def url(service: Service, path: str) -> str:
    return f"http://127.0.0.1:{service.http_port}{path}"


def workers_of(service: Service) -> list[Worker]:
    assert service.workers is not None
    return service.workers.workers


def type_lines(text: str) -> Tally[str]:
    return Tally(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE "))


def value(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


def promtool_passes(exposition: bytes) -> None:
    if PROMTOOL is None:
        return
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.fixture
def child_imports_test_actors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes must import `actors_for_tests` from tests/."""
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(TESTS_DIR) + (os.pathsep + existing if existing else ""))


# --- with worker processes ---


@pytest.mark.integration
async def test_a_lane_with_two_workers_handles_the_events_and_the_service_reports_them(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    async with serve(lane_config(redis_url)) as service:
        assert set(service.pools) == {"here"}  # the lane's pools run in the workers alone
        assert [w.ready for w in workers_of(service)] == [True, True]
        sent = await post_accepted(http, service, "work/1", [{"key": f"k{n}"} for n in range(40)])

        await wait_for(lambda: handled_count(redis, 40), timeout=10)
        assert sorted(await handled_ids(redis)) == sorted(sent)
        assert processed(service, "work") == 0  # counted by the workers, not here

        async def merged() -> str | None:
            """The service's /metrics once it counts every event as handled."""
            _, text = await get_text(http, url(service, "/metrics"))
            ok = {"class": "work", "outcome": "ok"}
            return text if value(text, "switchyard_events_processed_total", ok) == 40 else None

        text = await wait_for(merged, timeout=5)
        assert text is not None
        assert max(type_lines(text).values()) == 1
        promtool_passes(text.encode())

        status, ready = await get_text(http, url(service, "/readyz"))
        assert status == 200, ready
        async with http.get(url(service, "/classes")) as response:
            classes = await response.json()
        assert classes["work"]["workers"] == 2
        assert classes["work"]["running"] is True
        assert classes["here"]["workers"] == 0


@pytest.mark.integration
@pytest.mark.usefixtures("child_imports_test_actors")
async def test_a_killed_worker_is_restarted_and_its_events_are_reclaimed(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    config = lane_config(redis_url, actor="actors_for_tests:SlowForward", options=", sleep_s: 0.05")
    async with serve(config) as service:
        victim = workers_of(service)[0]
        sent = await post_accepted(http, service, "work/1", [{"key": f"a{n}"} for n in range(60)])

        async def victim_holds_entries() -> bool:
            async with http.get(victim.url("/classes")) as response:
                return int((await response.json())["work"]["inflight"]) > 0

        await wait_for(victim_holds_entries, timeout=5)
        assert victim.proc is not None
        os.kill(victim.proc.pid, signal.SIGKILL)

        async def not_running() -> bool:
            status, body = await get_text(http, url(service, "/readyz"))
            return status == 503 and "lane worker low#0 is not running" in body

        await wait_for(not_running, timeout=5)
        sent += await post_accepted(http, service, "work/2", [{"key": f"b{n}"} for n in range(60)])
        restarts = {"lane": "low"}
        await wait_for(
            lambda: sample(service, "switchyard_worker_restarts_total", restarts) == 1, timeout=5
        )
        await wait_for(lambda: victim.ready, timeout=10, message="the worker back")

        async def all_handled() -> bool:
            return set(await handled_ids(redis)) >= set(sent) and await pending(redis) == 0

        await wait_for(all_handled, timeout=15)
        status, _ = await get_text(http, url(service, "/readyz"))
        assert status == 200
        assert sample(service, "switchyard_worker_restarts_total", restarts) == 1


@pytest.mark.integration
@pytest.mark.usefixtures("child_imports_test_actors")
async def test_stopping_the_service_drains_its_workers_and_leaves_nothing_pending(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    config = lane_config(redis_url, actor="actors_for_tests:SlowForward", options=", sleep_s: 0.1")
    async with serve(config) as service:
        sent = await post_accepted(http, service, "work/1", [{"key": f"k{n}"} for n in range(80)])
        await wait_for(lambda: pending(redis), timeout=5, message="entries in flight")
        processes = [w.proc for w in workers_of(service)]

        await service.stop()

        assert [p.returncode for p in processes if p is not None] == [0, 0]
        assert service.exit_code == 0
        assert await pending(redis) == 0  # what the workers had fetched was finished and acked
        handled = await handled_ids(redis)
        assert handled
        assert set(handled) <= set(sent)


@pytest.mark.integration
async def test_workers_do_not_outlive_a_killed_service(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "switchyard.yaml"
    path.write_text(lane_yaml(redis_url))
    service = ServiceProcess(path)
    try:
        await service.start()

        def running_workers() -> list[int] | None:
            """The workers' pids, once both run their pools (and handle SIGTERM by draining)."""
            logs = service.logs
            pids = [line["pid"] for line in logs if line["event"] == "lane worker started"]
            ready = [line for line in logs if line["event"] == "switchyard started"]
            return pids if len(pids) == 2 and len(ready) == 3 else None

        pids = await wait_for(running_workers, timeout=15)
        assert pids is not None
        await service.kill()  # SIGKILL: the service cannot stop them itself

        await wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=10)
    finally:
        await service.close()


# --- config ---


def test_the_service_runs_the_other_lanes_and_a_worker_its_own_lane_alone() -> None:
    config = parse_config("""
lanes: [{name: high, min_share: 0.5}, {name: low, workers: 2}, {name: bulk, workers: 1}]
classes:
  a: {lane: high, actor: "actors.builtin:Log"}
  b: {lane: low, actor: "actors.builtin:Log"}
  c: {lane: bulk, actor: "actors.builtin:Log"}
""")
    service = Service(config, registry=CollectorRegistry())
    worker = Service(config, registry=CollectorRegistry(), assignment=Assignment("low", 1, 1))

    assert service.placement.classes() == ["a"]
    assert worker.placement.classes() == ["b"]
    assert [lane.name for lane in worker.placement.lanes()] == [
        "low"
    ]  # high reserves nothing there


def test_check_shows_the_workers_of_a_lane() -> None:
    text = summary(lane_config("redis://127.0.0.1:1/0", workers=3))
    assert "lanes (2, highest first): high, low (3 workers)" in text


def test_a_lane_with_workers_and_no_classes_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"lanes\[1\]\.workers: lane 'idle' has workers"):
        parse_config("""
lanes: [{name: high}, {name: idle, workers: 1}]
classes:
  a: {lane: high, actor: "actors.builtin:Log"}
""")


# --- merging expositions ---


def exposition(
    processed: float, inflight: float, backlog: float, compliance: float, latencies: list[float]
) -> list[Any]:
    """One process's families, like a service or a worker exports them."""
    registry = CollectorRegistry()
    Counter("sy_processed_total", "Processed.", ["class"], registry=registry).labels("a").inc(
        processed
    )
    Gauge("switchyard_inflight", "In flight.", ["class"], registry=registry).labels("a").set(
        inflight
    )
    Gauge("switchyard_stream_backlog", "Backlog.", ["class"], registry=registry).labels("a").set(
        backlog
    )
    ratio = Gauge("switchyard_sla_compliance_ratio", "Compliance.", ["class"], registry=registry)
    ratio.labels("a").set(compliance)
    latency = Histogram(
        "sy_latency_seconds", "Latency.", ["class"], buckets=(0.1, 1), registry=registry
    )
    for seconds in latencies:
        latency.labels("a").observe(seconds)
    return parse(generate_latest(registry).decode())


def test_merged_counters_histograms_and_gauges_follow_their_rules() -> None:
    first = exposition(3, inflight=2, backlog=10, compliance=0.99, latencies=[0.05, 0.5])
    second = exposition(4, inflight=5, backlog=12, compliance=0.9, latencies=[2.0])

    text = render(merge([first, second])).decode()

    a = {"class": "a"}
    assert value(text, "sy_processed_total", a) == 7  # summed
    assert value(text, "switchyard_inflight", a) == 7  # per process: summed
    assert value(text, "switchyard_stream_backlog", a) == 12  # one stream read twice: the max
    assert value(text, "switchyard_sla_compliance_ratio", a) == 0.9  # the worst
    assert value(text, "sy_latency_seconds_bucket", {**a, "le": "0.1"}) == 1
    assert value(text, "sy_latency_seconds_bucket", {**a, "le": "1.0"}) == 2
    assert value(text, "sy_latency_seconds_bucket", {**a, "le": "+Inf"}) == 3
    assert value(text, "sy_latency_seconds_count", a) == 3
    assert value(text, "sy_latency_seconds_sum", a) == pytest.approx(2.55)
    starts = [
        s.value for f in first + second for s in f.samples if s.name == "sy_processed_created"
    ]
    assert value(text, "sy_processed_created", a) == min(starts)  # the earliest
    assert max(type_lines(text).values()) == 1
    promtool_passes(text.encode())


def test_a_series_only_one_process_has_is_kept_as_it_is() -> None:
    first = exposition(1, inflight=0, backlog=0, compliance=1, latencies=[])
    registry = CollectorRegistry()
    Counter("sy_restarts_total", "Restarts.", ["lane"], registry=registry).labels("low").inc(2)

    text = render(merge([first, parse(generate_latest(registry).decode())])).decode()

    assert value(text, "sy_restarts_total", {"lane": "low"}) == 2
    assert value(text, "sy_processed_total", {"class": "a"}) == 1


def test_an_exited_process_keeps_its_counts_but_not_its_gauges() -> None:
    gone = exposition(5, inflight=3, backlog=9, compliance=0.5, latencies=[0.5])

    kept = lasting(gone)

    names = {family.name for family in kept}
    assert names == {"sy_processed", "sy_latency_seconds"}
    text = render(merge([exposition(1, 0, 0, 1, []), kept])).decode()
    assert value(text, "sy_processed_total", {"class": "a"}) == 6
    assert value(text, "sy_latency_seconds_count", {"class": "a"}) == 1
    assert value(text, "switchyard_sla_compliance_ratio", {"class": "a"}) == 1
