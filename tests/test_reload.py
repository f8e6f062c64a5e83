"""Hot reload: a routing change and a class's settings applied live, as one step; a bad file,
or a change that cannot be made live, refused with its line and counted, changing nothing;
no event lost or doubled beyond at-least-once across reloads under load; SIGHUP and
`switchyard reload` against a running `switchyard run`."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import pytest
from actors_for_tests import probe
from servers import ServiceProcess, free_port, listening, wait_for

from router.config import load_config

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import aiohttp
    from actors_for_tests import Probe
    from helpers import Serve

    from router.service.service import Service

pytestmark = pytest.mark.usefixtures("probes")


def config_text(
    redis_url: str,
    *,
    route_to: str = "first",
    concurrency: int = 2,
    mode: str = "queue",
    extra_class: str = "",
    port: int = 0,
) -> str:
    return f"""
redis: {{url: "{redis_url}"}}
http: {{port: {port}}}
service: {{log_format: json}}
lanes: [{{name: high}}, {{name: low}}]
routes:
  - {{topic: "things/+", class: {route_to}}}
classes:
  first:
    lane: high
    actor: "actors_for_tests:Recorder"
    mode: {mode}
    concurrency: {concurrency}
    options: {{name: first}}
  second:
    lane: low
    actor: "actors_for_tests:Recorder"
    options: {{name: second}}
{extra_class}"""


@pytest.fixture
def config_file(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "switchyard.yaml"
    path.write_text(config_text(redis_url))
    return path


async def rewrite(path: Path, text: str) -> None:
    """Edit the config file, as ops would between two reloads."""
    await asyncio.to_thread(path.write_text, text)


async def post(http: aiohttp.ClientSession, service: Service, count: int, at: int = 0) -> None:
    url = f"http://127.0.0.1:{service.http_port}/events/things/x"
    body = [{"n": n} for n in range(at, at + count)]
    async with http.post(url, json=body) as response:
        assert response.status == 202, await response.text()


def numbers(seen: Probe) -> list[int]:
    return sorted(event.payload["n"] for event in seen.handled)


async def test_a_route_and_a_concurrency_change_apply_live(
    serve: Serve, config_file: Path, redis_url: str, http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:  # fmt: skip
    async with serve(load_config(config_file)) as service:
        await post(http, service, 3)
        await wait_for(lambda: "first" in probes and len(probes["first"].handled) == 3)
        await rewrite(config_file, config_text(redis_url, route_to="second", concurrency=5))
        reloaded = await service.reload()
        assert (reloaded.applied, reloaded.changed) == (True, "routes, ~first")
        await post(http, service, 4, at=3)
        await wait_for(lambda: "second" in probes and len(probes["second"].handled) == 4)
        [pool] = [p for p in service.pools.values() if p.cls == "first"]
        assert (pool.config.concurrency, pool.slots.capacity) == (5, 5)
        async with http.get(f"http://127.0.0.1:{service.http_port}/readyz") as response:
            ready = await response.json()
        metrics = service.metrics.registry
        info = metrics.get_sample_value(
            "switchyard_config_info", {"hash": service.config_hash, "generation": "2"}
        )
    assert numbers(probes["first"]) == [0, 1, 2]
    assert numbers(probes["second"]) == [3, 4, 5, 6]
    assert ready["config"] == {"hash": service.config_hash, "generation": 2}
    assert info == 1.0
    assert metrics.get_sample_value("switchyard_config_reloads_total", {"outcome": "applied"}) == 1


@pytest.mark.parametrize(
    "case",
    [
        (lambda url: config_text(url) + "  third: {lane: high\n", "not valid YAML"),
        (lambda url: config_text(url, concurrency=0), "classes.first.concurrency"),
        (lambda url: config_text(url, mode="batch"), "mode cannot change live"),
        (lambda url: config_text(url).replace("Recorder\"\n    mode", "Nobody\"\n    mode", 1),
         "has no 'Nobody'"),
        (lambda url: config_text(url).replace("lanes: [", "lanes: [{name: new}, "),
         "lanes: changes need a restart"),
        (lambda url: config_text(url, extra_class="  third: {lane: high, mode: stream, "
                                 "actor: 'actors_for_tests:Recorder', options: {name: t}}\n"),
         "a new stream-mode class needs a restart"),
    ],
)  # fmt: skip
async def test_a_file_that_cannot_be_taken_is_refused_with_its_line_and_changes_nothing(
    serve: Serve, config_file: Path, http: aiohttp.ClientSession, probes: dict[str, Probe],
    case: tuple[Any, str],
) -> None:  # fmt: skip
    edit, said = case
    redis_url = load_config(config_file).redis.url
    async with serve(load_config(config_file)) as service:
        before = service.config_hash
        await rewrite(config_file, edit(redis_url))
        refused = await service.reload()
        await post(http, service, 2)
        await wait_for(lambda: "first" in probes and len(probes["first"].handled) == 2)
        counted = service.metrics.registry.get_sample_value(
            "switchyard_config_reloads_total", {"outcome": "refused"}
        )
    assert not refused.applied
    assert any(said in issue for issue in refused.issues), refused.issues
    assert all(issue.startswith("line ") for issue in refused.issues)
    assert (service.config_hash, service.config_generation) == (before, 1)
    assert counted == 1


async def test_a_removed_class_goes_only_once_it_is_empty(
    serve: Serve, config_file: Path, redis_url: str, http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:  # fmt: skip
    spare = "  spare: {lane: low, actor: 'actors_for_tests:Recorder', options: {name: spare}}\n"
    await rewrite(config_file, config_text(redis_url, extra_class=spare))
    async with serve(load_config(config_file)) as service:
        probe_gate = probe("spare")
        probe_gate.gate.clear()  # spare's handler holds its event
        await rewrite(config_file, config_text(redis_url, route_to="spare", extra_class=spare))
        assert (await service.reload()).applied
        await post(http, service, 1)
        await wait_for(lambda: probe_gate.started)
        await wait_for(lambda: service.stats.get("spare") and service.stats["spare"].pending)
        await rewrite(config_file, config_text(redis_url))
        held = await service.reload()
        probe_gate.gate.set()
        await wait_for(lambda: probe_gate.handled)
        await wait_for(lambda: not service.stats["spare"].pending, timeout=10)
        emptied = await service.reload()
        assert "spare" not in {p.cls for p in service.pools.values()}
    assert not held.applied
    assert any("spare still holds 1 event(s)" in issue for issue in held.issues)
    assert (emptied.applied, emptied.changed) == (True, "routes, -spare")


async def test_reloads_under_load_lose_nothing(
    serve: Serve, config_file: Path, redis_url: str, http: aiohttp.ClientSession,
    probes: dict[str, Probe],
) -> None:  # fmt: skip
    sent = 0
    enough = asyncio.Event()
    async with serve(load_config(config_file)) as service:

        async def load() -> None:
            """POSTs until told to stop, each counted once answered; never cut off midway,
            where the service could have taken 20 events that were never counted."""
            nonlocal sent
            while not enough.is_set():
                await post(http, service, 20, at=sent)
                sent += 20
                await asyncio.sleep(0.005)

        loading = asyncio.create_task(load())
        try:
            for round_ in range(8):
                route_to, concurrency = ("first", "second")[round_ % 2], 1 + round_ % 4
                good = config_text(redis_url, route_to=route_to, concurrency=concurrency)
                await rewrite(config_file, good if round_ != 5 else "not: [valid")
                await service.reload()
                await wait_for(functools.partial(_at_least, lambda: sent, 40 * (round_ + 1)))
        finally:
            enough.set()
            await loading
        await wait_for(lambda: _handled() == set(range(sent)), timeout=20)
        refusals = service.metrics.registry.get_sample_value(
            "switchyard_config_reloads_total", {"outcome": "refused"}
        )
    assert sent >= 320
    assert refusals == 1


def _at_least(count: Callable[[], int], wanted: int) -> bool:
    return count() >= wanted


def _handled() -> set[int]:
    """Every event number either class handled, repeats once."""
    return {e.payload["n"] for name in ("first", "second") for e in probe(name).handled}


# --- against a running `switchyard run` ---


async def test_sighup_and_switchyard_reload_against_a_running_instance(
    tmp_path: Path, redis_url: str, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    path = tmp_path / "switchyard.yaml"
    path.write_text(config_text(redis_url, port=port).replace("actors_for_tests:Recorder",
                                                             "actors.builtin:Log"))  # fmt: skip
    service = ServiceProcess(path)
    try:
        await service.start()
        await wait_for(lambda: listening(port), timeout=20)
        await rewrite(
            path,
            (await asyncio.to_thread(path.read_text)).replace("concurrency: 2", "concurrency: 3"),
        )
        assert service.pid is not None
        os.kill(service.pid, signal.SIGHUP)
        reloaded = await wait_for(lambda: service.logged("config reloaded"), timeout=10)
        assert reloaded is not None
        await rewrite(
            path,
            (await asyncio.to_thread(path.read_text)).replace("concurrency: 3", "concurrency: x"),
        )
        refused = await _switchyard("reload", "--config", str(path))
        await rewrite(
            path,
            (await asyncio.to_thread(path.read_text)).replace("concurrency: x", "concurrency: 4"),
        )
        applied = await _switchyard("reload", "--config", str(path))
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            ready = await response.json()
    finally:
        await service.close()
    assert reloaded["changed"] == "~first"
    assert refused[0] == 2
    assert "line 13: classes.first.concurrency: Input should be a valid integer" in refused[1]
    assert "nothing sent: the running instance keeps its config" in refused[1]
    assert applied[0] == 0
    assert applied[1].startswith("applied: ~first (config ")
    assert ready["config"]["generation"] == 3


async def _switchyard(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_class_run_by_lane_workers_takes_its_change_as_they_start_again(
    serve: Serve, tmp_path: Path, redis_url: str, http: aiohttp.ClientSession
) -> None:
    path = tmp_path / "workers.yaml"
    text = config_text(redis_url).replace(
        "lanes: [{name: high}, {name: low}]", "lanes: [{name: high}, {name: low, workers: 1}]"
    ).replace('"actors_for_tests:Recorder"\n    options: {name: second}',
              '"actors.builtin:Log"\n    concurrency: 2')  # fmt: skip
    path.write_text(text)
    async with serve(load_config(path)) as service:
        second = text.rsplit("concurrency: 2", 1)  # the second class's, the last one
        await rewrite(path, "concurrency: 7".join(second))
        reloaded = await service.reload()
        views = await wait_for(functools.partial(_worker_concurrency, service, 7), timeout=20)
        await post(http, service, 3)  # still routed to `first`, in the service
        await wait_for(lambda: len(probe("first").handled) == 3)
    assert (reloaded.applied, reloaded.changed) == (True, "~second")
    assert views["second"]["workers"] == 1


async def _worker_concurrency(service: Service, wanted: int) -> dict[str, Any] | None:
    views = dict(await service.views.class_views())
    second = views.get("second")
    return views if second is not None and second.get("concurrency") == wanted else None


async def test_a_watched_config_file_reloads_when_it_changes(
    serve: Serve, config_file: Path, redis_url: str
) -> None:
    watched = config_text(redis_url).replace(
        "{log_format: json}", "{log_format: json, watch_config: true}"
    )
    await rewrite(config_file, watched)
    async with serve(load_config(config_file)) as service:
        await rewrite(config_file, watched.replace("concurrency: 2", "concurrency: 3"))
        await wait_for(lambda: service.config_generation == 2, timeout=15)
        await rewrite(config_file, "classes: [broken")  # refused, and watched again after
        await wait_for(
            lambda: (
                service.metrics.registry.get_sample_value(
                    "switchyard_config_reloads_total", {"outcome": "refused"}
                )
                == 1
            ),
            timeout=15,
        )
    assert service.config_generation == 2
    assert service.config.classes["first"].concurrency == 3


async def test_an_edit_made_while_the_service_starts_is_reloaded_by_the_watch(
    serve: Serve, config_file: Path, redis_url: str
) -> None:
    """The watch compares the file with the bytes the running config was read from, not with
    whatever the file holds when the watch first looks."""
    watched = config_text(redis_url).replace(
        "{log_format: json}", "{log_format: json, watch_config: true}"
    )
    await rewrite(config_file, watched)
    config = load_config(config_file)
    await rewrite(config_file, watched.replace("concurrency: 2", "concurrency: 3"))
    async with serve(config) as service:
        await wait_for(lambda: service.config_generation == 2, timeout=15)
        assert service.config.classes["first"].concurrency == 3


async def test_an_edit_reloaded_by_hand_is_not_reloaded_again_by_the_watch(
    serve: Serve, config_file: Path, redis_url: str
) -> None:
    """A SIGHUP or `switchyard reload` applied the edit: the watch's next look finds the file
    as that reload read it, and leaves it; the next edit it reloads."""

    def applied() -> float | None:
        labels = {"outcome": "applied"}
        return service.metrics.registry.get_sample_value("switchyard_config_reloads_total", labels)

    async with serve(load_config(config_file)) as service:
        await rewrite(config_file, config_text(redis_url, concurrency=3))
        assert (await service.reload()).changed == "~first"
        assert await service.reload_if_changed() is None  # the watch's step
        assert applied() == 1
        await rewrite(config_file, config_text(redis_url, concurrency=4))
        reloaded = await service.reload_if_changed()
        assert reloaded is not None
        assert reloaded.changed == "~first"
        assert applied() == 2
        assert service.config.classes["first"].concurrency == 4
