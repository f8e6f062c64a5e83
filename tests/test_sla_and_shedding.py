"""SLA accounting, load shedding, the status table and lane admission, against a real Redis."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from actors_for_tests import probe
from helpers import Serve, post_events, sample
from servers import wait_for

from router.cli import main
from router.config import Config, parse_config
from router.streams import keys
from router.testing import FakeClock

if TYPE_CHECKING:
    from pathlib import Path

    import aiohttp
    from redis.asyncio import Redis

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("probes")]


def make_config(redis_url: str, classes: str, service: str = "drain_timeout_s: 5") -> Config:
    return parse_config(f"""
service: {{{service}}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.1}}
http: {{port: 0}}
lanes: [{{name: high}}, {{name: low, min_share: 0.25}}]
routes:
  - {{topic: "urgent/+", class: urgent, key: key}}
  - {{topic: "bulk/+", class: bulk, key: key}}
classes:
{classes}""")


URGENT = """  urgent:
    lane: high
    actor: actors_for_tests:Recorder
    concurrency: 4
    options: {name: urgent}
"""


def bulk(extra: str = "", concurrency: int = 4) -> str:
    return f"""  bulk:
    lane: low
    actor: actors_for_tests:Recorder
    concurrency: {concurrency}
    options: {{name: bulk}}
{extra}"""


async def test_late_events_count_as_sla_breaches_and_lower_compliance(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession
) -> None:
    classes = URGENT.replace(
        "    options:", "    sla: {target_ms: 50, objective: 0.99}\n    options:"
    )
    held = probe("urgent")
    held.gate.clear()
    clock = FakeClock()  # latency is wall time from ingest to ack: we decide how much passes
    async with serve(make_config(redis_url, classes + bulk()), clock) as service:
        assert sample(service, "switchyard_sla_target_seconds", {"class": "urgent"}) == 0.05
        assert sample(service, "switchyard_sla_objective_ratio", {"class": "urgent"}) == 0.99
        await post_events(http, service, "urgent/1", [{"key": "a"}, {"key": "b"}])
        await wait_for(lambda: held.active == 2)
        clock.advance(0.06)  # held past the 50 ms target: both will be late
        held.gate.set()
        await wait_for(
            lambda: sample(service, "switchyard_sla_breaches_total", {"class": "urgent"}) == 2
        )

        await post_events(http, service, "urgent/1", [{"key": "c"}, {"key": "d"}])  # on time now
        await wait_for(
            lambda: (
                sample(
                    service,
                    "switchyard_events_processed_total",
                    {"class": "urgent", "outcome": "ok"},
                )
                == 4
            )
        )
        await wait_for(
            lambda: sample(service, "switchyard_sla_compliance_ratio", {"class": "urgent"}) == 0.5
        )
        assert sample(service, "switchyard_sla_breaches_total", {"class": "urgent"}) == 2


async def test_a_class_over_its_backlog_bound_refuses_new_events_with_503(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession
) -> None:
    held = probe("bulk")
    held.gate.clear()
    config = make_config(
        redis_url, URGENT + bulk("    shed: {max_backlog: 3, action: refuse}\n", 1)
    )
    async with serve(config) as service:
        status, _ = await post_events(http, service, "bulk/1", [{"key": str(n)} for n in range(5)])
        assert status == 202
        await wait_for(
            lambda: service.stats.get("bulk") is not None and service.stats["bulk"].backlog == 4
        )

        status, reply = await post_events(http, service, "bulk/1", {"key": "late"})
        assert status == 503
        assert "overloaded" in reply["error"]
        assert (
            sample(service, "switchyard_events_shed_total", {"class": "bulk", "action": "refuse"})
            == 1
        )
        # Other classes are not affected.
        status, _ = await post_events(http, service, "urgent/1", {"key": "x"})
        assert status == 202
        held.gate.set()


async def test_events_older_than_max_age_are_expired_to_dead_letters_not_handled(
    serve: Serve, redis_url: str, redis: Redis, http: aiohttp.ClientSession
) -> None:
    held = probe("bulk")
    held.gate.clear()
    config = make_config(
        redis_url, URGENT + bulk("    shed: {max_age_ms: 100, action: expire}\n", 1)
    )
    clock = FakeClock()
    async with serve(config, clock) as service:
        await post_events(http, service, "bulk/1", [{"key": "first"}, {"key": "stale"}])
        await wait_for(lambda: held.active == 1)
        clock.advance(0.15)  # "stale" now waited past max_age_ms while "first" was handled
        held.gate.set()

        await wait_for(
            lambda: (
                sample(
                    service, "switchyard_events_shed_total", {"class": "bulk", "action": "expire"}
                )
                == 1
            )
        )
        assert [e.payload["key"] for e in held.handled] == ["first"]
        entries: Any = await redis.xrange(keys.dead_letters("bulk"))
        [(_, dead)] = entries
        assert dead[b"reason"] == b"expired"


async def test_a_saturated_process_admits_the_high_lane_first(
    serve: Serve, redis_url: str, http: aiohttp.ClientSession
) -> None:
    urgent, low = probe("urgent"), probe("bulk")
    urgent.gate.clear()
    low.gate.clear()
    # Capacity 4: low's minimum share is 1 slot; urgent may take the rest.
    config = make_config(redis_url, URGENT + bulk(), service="drain_timeout_s: 5, capacity: 4")
    async with serve(config) as service:
        await post_events(http, service, "bulk/1", [{"key": str(n)} for n in range(8)])
        await wait_for(lambda: low.active == 4)  # low took every slot while alone
        await post_events(http, service, "urgent/1", [{"key": str(n)} for n in range(8)])
        await wait_for(lambda: service.scheduler.lanes["high"].waiters)

        low.gate.set()  # low's slots come free; urgent is admitted first, low keeps its share
        await wait_for(lambda: urgent.active == 3)
        # With urgent holding everything else, low still drains its backlog through its share.
        await wait_for(lambda: len(low.handled) == 8)
        assert urgent.active == 3
        assert service.scheduler.lanes["high"].used == 3
        urgent.gate.set()
        await wait_for(lambda: len(urgent.handled) == 8 and len(low.handled) == 8)


async def test_status_shows_every_class_from_redis_and_the_running_instance(
    serve: Serve,
    redis_url: str,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_file = tmp_path / "switchyard.yaml"
    config_file.write_text(f"""
redis: {{url: "{redis_url}"}}
lanes: [{{name: high}}, {{name: low}}]
classes:
{URGENT}{bulk()}""")
    async with serve(make_config(redis_url, URGENT + bulk())) as service:
        await post_events(http, service, "urgent/1", [{"key": "a"}, {"key": "b"}])
        await wait_for(lambda: len(probe("urgent").handled) == 2)

        async def reported() -> bool:
            return bool(
                await service.transport.redis.get(keys.instance(service.transport.consumer))
            )

        await wait_for(reported)
        assert await asyncio.to_thread(main, ["status", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "1 instance(s) reporting" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("urgent ", "bulk "))]
    lines = {row[0]: row for row in rows}
    assert set(lines) == {"urgent", "bulk"}
    assert lines["urgent"][1:3] == ["high", "queue"]
