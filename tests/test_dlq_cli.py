"""`switchyard dlq list|show|replay|purge` against a real redis-server and a running service.

`router.cli.main` is called in a worker thread (it runs its own event loop) with a config file
whose `redis.url` is the test's server; the service under test runs in this process on the
same file, so replayed events are handled by its pool.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from asyncio.subprocess import PIPE
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from actors_for_tests import probe, runs
from helpers import GROUP, Serve, post_accepted, processed, routed_class
from servers import wait_for

from router.cli import main
from router.config import load_config
from router.streams import keys
from router.streams.deadletters import LIST_LIMIT, DeadLetters, failure_fields
from router.streams.envelope import Envelope
from router.streams.redis import RedisTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp
    from redis.asyncio import Redis

    from router.service.service import Service

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("probes", "steered_runs")]


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every dead-letter command runs against a single Redis and the 3-master cluster."""
    return any_redis_url


@pytest.fixture
def config_file(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "switchyard.yaml"
    path.write_text(
        f"""
service: {{drain_timeout_s: 5}}
redis: {{url: "{redis_url}", block_ms: 50, stats_interval_s: 0.2}}
http: {{port: 0}}
lanes: [{{name: high}}]
"""
        + routed_class(
            "work",
            "actors_for_tests:Steered",
            "name: work",
            concurrency=2,
            settings="retry: {max_attempts: 1}",
        )
    )
    return path


@pytest_asyncio.fixture
async def service(serve: Serve, config_file: Path) -> AsyncIterator[Service]:
    async with serve(load_config(config_file, environ={})) as running:
        yield running


class Cli:
    """Runs `switchyard dlq ...` on the test's config file; returns (exit code, stdout)."""

    def __init__(self, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config_file = config_file
        self.capsys = capsys

    async def __call__(self, action: str, *args: str, cls: str = "work") -> tuple[int, str]:
        self.capsys.readouterr()  # drop what came before (service logs)
        argv = ["dlq", action, "--config", str(self.config_file), "--class", cls, *args]
        code = await asyncio.to_thread(main, argv)
        return code, self.capsys.readouterr().out


@pytest.fixture
def cli(config_file: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(config_file, capsys)


async def dead_letter_ids(redis: Redis) -> list[str]:
    """Event ids in the dead-letter stream of `work`, oldest first."""
    entries: Any = await redis.xrange(keys.dead_letters("work"))
    return [fields[b"id"].decode() for _, fields in entries]


async def dead_letters_for(
    http: aiohttp.ClientSession, service: Service, redis: Redis, count: int, tag: str = "a"
) -> list[str]:
    """Post `count` events while the actor is broken; returns their ids once dead-lettered."""
    runs("work").broken = True
    before = processed(service, "work", "dead")
    ids = await post_accepted(
        http, service, "work/1", [{"key": f"{tag}{n}", "tag": tag} for n in range(count)]
    )
    await wait_for(lambda: processed(service, "work", "dead") == before + count, timeout=5)
    assert set(ids) <= set(await dead_letter_ids(redis))
    runs("work").broken = False
    return ids


def listed_ids(output: str) -> list[str]:
    """Event ids in the rows of `dlq list` (entry, date, time, reason, tries, event id, ...)."""
    rows = [line.split() for line in output.splitlines()]
    return [row[5] for row in rows if len(row) >= 6 and re.fullmatch(r"\d+-\d+", row[0])]


async def test_list_prints_every_dead_letter_with_its_reason_attempts_and_event_id(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    ids = await dead_letters_for(http, service, redis, 2)

    code, out = await cli("list")

    assert code == 0
    assert listed_ids(out) == ids
    rows = [line for line in out.splitlines() if any(i in line for i in ids)]
    assert all("handler_error" in row and " 1 " in row and "broken" in row for row in rows)
    assert "2 dead letter(s)" in out


async def test_show_prints_each_dead_letter_in_full_with_its_payload(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    [event_id] = await dead_letters_for(http, service, redis, 1)

    code, out = await cli("show", "--id", event_id)

    assert code == 0
    shown, _ = json.JSONDecoder().raw_decode(out, out.index("{"))
    assert shown["id"] == event_id
    assert shown["reason"] == "handler_error"
    assert shown["error_type"] == "HandlerFailed"
    assert shown["payload"] == {"key": "a0", "tag": "a"}
    assert int(shown["attempts"]) == 1


async def test_replay_puts_dead_letters_back_with_attempt_reset_and_the_pool_handles_them(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    ids = await dead_letters_for(http, service, redis, 3)
    assert [attempt for _, attempt, _ in runs("work").runs] == [0, 0, 0]

    code, out = await cli("replay", "--all")

    assert code == 0
    assert "replayed 3 into work" in out
    await wait_for(lambda: sorted(probe("work").handled_ids()) == sorted(ids), timeout=5)
    replayed_runs = runs("work").runs[3:]
    assert sorted(event for event, _, _ in replayed_runs) == sorted(ids)
    assert [attempt for _, attempt, _ in replayed_runs] == [0, 0, 0]
    assert await dead_letter_ids(redis) == []

    code, out = await cli("replay", "--all")  # the same command again replays nothing

    assert code == 0
    assert "replayed 0 into work" in out
    assert len(runs("work").runs) == 6
    assert sorted(probe("work").handled_ids()) == sorted(ids)


async def test_two_replays_of_the_same_dead_letters_replay_each_entry_once(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    ids = await dead_letters_for(http, service, redis, 4)
    letters = DeadLetters(redis, RedisTransport(redis, GROUP, "test"), "work")
    listed = await letters.entries()

    # Both listed the same entries before either replayed them (two operators, one moment).
    first, second = await asyncio.gather(letters.replay(listed), letters.replay(listed))

    assert first[0] + second[0] == 4
    assert sorted(first[1] + second[1]) == sorted(letter.entry_id for letter in listed)
    await wait_for(lambda: len(probe("work").handled) == 4, timeout=5)
    assert sorted(probe("work").handled_ids()) == sorted(ids)
    assert await redis.xlen(keys.stream("work")) == 4 + 4  # the originals and one replay each

    code, out = await cli("replay", "--all")
    assert code == 0
    assert "replayed 0 into work" in out


async def test_a_replay_of_events_that_fail_again_replays_each_once_and_stops(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    ids = await dead_letters_for(http, service, redis, 3)
    runs("work").broken = True  # still broken: each replayed event is dead again at once
    dead_before = processed(service, "work", "dead")
    code, out = await cli("replay", "--all")
    assert code == 0
    assert "replayed 3 into work" in out  # not its own new dead letters as well
    await wait_for(lambda: processed(service, "work", "dead") == dead_before + 3, timeout=5)
    runs("work").broken = False
    assert sorted(await dead_letter_ids(redis)) == sorted(ids)  # each dead once more, once


async def test_a_replay_reports_the_entries_it_skipped_because_another_replay_took_them(
    service: Service, redis: Redis, http: aiohttp.ClientSession
) -> None:
    await dead_letters_for(http, service, redis, 2)
    letters = DeadLetters(redis, RedisTransport(redis, GROUP, "test"), "work")
    listed = await letters.entries()
    replayed, skipped = await letters.replay(listed)
    assert (replayed, skipped) == (2, [])

    assert await letters.replay(listed) == (0, [letter.entry_id for letter in listed])


async def test_purge_by_id_deletes_only_that_dead_letter(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    ids = await dead_letters_for(http, service, redis, 3)

    code, out = await cli("purge", "--id", ids[1])

    assert code == 0
    assert "purged 1 dead letters of work" in out
    assert await dead_letter_ids(redis) == [ids[0], ids[2]]
    code, out = await cli("list")
    assert listed_ids(out) == [ids[0], ids[2]]

    code, out = await cli("purge", "--all")
    assert code == 0
    assert "purged 2" in out
    assert await dead_letter_ids(redis) == []


async def test_since_and_id_select_dead_letters_for_list_and_replay(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    older = await dead_letters_for(http, service, redis, 2, tag="old")
    entries: Any = await redis.xrange(keys.dead_letters("work"))
    last_ms = int(entries[-1][0].decode().partition("-")[0])
    await wait_for(lambda: datetime.now(UTC).timestamp() * 1000 > last_ms + 2)
    boundary = datetime.now(UTC).isoformat()
    newer = await dead_letters_for(http, service, redis, 2, tag="new")

    code, out = await cli("list", "--since", boundary)
    assert code == 0
    assert listed_ids(out) == newer

    code, out = await cli("list", "--since", "1h")
    assert listed_ids(out) == older + newer

    code, out = await cli("list", "--id", older[1])
    assert listed_ids(out) == [older[1]]
    entry_id = out.split()[out.split().index(older[1]) - 5]  # the row's first column
    code, out = await cli("list", "--id", entry_id)
    assert listed_ids(out) == [older[1]]

    code, out = await cli("replay", "--since", boundary)
    assert code == 0
    assert "replayed 2 into work" in out
    await wait_for(lambda: sorted(probe("work").handled_ids()) == sorted(newer), timeout=5)
    assert await dead_letter_ids(redis) == older


async def test_unrouted_events_can_be_listed_by_their_own_name(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    async with http.post(
        f"http://127.0.0.1:{service.http_port}/events/nowhere/1", json={"event_id": "lost-1"}
    ) as response:
        assert response.status == 202

    code, out = await cli("list", cls=keys.UNROUTED)

    assert code == 0
    assert "lost-1" in out
    assert "unrouted" in out


@pytest.mark.parametrize(
    ("action", "args", "complaint"),
    [
        ("list", ["--class", "no.such.class"], "no class 'no.such.class'"),
        ("replay", ["--class", "work"], "needs --id, --since or --all"),
        ("purge", ["--class", "work"], "needs --id, --since or --all"),
        ("list", ["--class", "work", "--since", "yesterday-ish"], "--since"),
    ],
    ids=["unknown-class", "replay-without-selection", "purge-without-selection", "bad-since"],
)
async def test_a_bad_dlq_command_exits_2_and_says_why(
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    action: str,
    args: list[str],
    complaint: str,
) -> None:
    code = await asyncio.to_thread(main, ["dlq", action, "--config", str(config_file), *args])

    assert code == 2
    assert complaint in capsys.readouterr().err


async def many_dead_letters(redis: Redis, count: int) -> list[str]:
    """`count` dead letters of `work` written directly; returns their event ids, oldest first."""
    ids = [f"ev-{n:05d}" for n in range(count)]
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in ids:
            envelope = Envelope(id=event_id, cls="work", lane="high", payload={"key": event_id})
            fields: dict[Any, Any] = dict(
                failure_fields(envelope, "handler_error", "broken", time.time())
            )
            pipe.xadd(keys.dead_letters("work"), fields)
        await pipe.execute()
    return ids


@pytest.mark.parametrize("action", ["purge", "replay"])
async def test_all_means_every_dead_letter_even_past_the_list_limit(
    redis: Redis, cli: Cli, action: str
) -> None:
    await many_dead_letters(redis, LIST_LIMIT + 200)

    code, out = await cli(action, "--all")

    assert code == 0
    assert await redis.xlen(keys.dead_letters("work")) == 0, out
    if action == "replay":
        assert await redis.xlen(keys.stream("work")) == LIST_LIMIT + 200


async def test_an_id_past_the_list_limit_is_still_found(redis: Redis, cli: Cli) -> None:
    ids = await many_dead_letters(redis, LIST_LIMIT + 200)

    code, out = await cli("list", "--id", ids[-1])

    assert code == 0
    assert listed_ids(out) == [ids[-1]]


# --- what senders chose, shown to an operator ---


async def test_list_shows_escape_sequences_a_sender_put_in_a_dead_letter_escaped(
    service: Service, redis: Redis, http: aiohttp.ClientSession, cli: Cli
) -> None:
    """An `event_id` that clears the screen and a topic that recolours it (main printed them
    raw to the operator's terminal)."""
    hostile_id = "\x1b[2J\x1b[Hpwned"
    topic = "nowhere%1b[31m/1"  # the path is decoded: the topic holds ESC
    await post_accepted(http, service, topic, {"event_id": hostile_id})

    code, out = await cli("list", cls=keys.UNROUTED)

    assert code == 0
    assert "\x1b" not in out
    assert "\\x1b[2J\\x1b[Hpwned" in out


async def test_an_unrouted_event_is_replayed_into_its_class_once_a_route_is_added(
    service: Service,
    redis: Redis,
    http: aiohttp.ClientSession,
    cli: Cli,
    config_file: Path,
) -> None:
    [event_id] = await post_accepted(http, service, "late/1", {"key": "k", "n": 7})
    assert await redis.xlen(keys.unrouted()) == 1
    code, out = await cli("replay", "--all", cls=keys.UNROUTED)
    assert (code, out.splitlines()[0]) == (0, "replayed 0 into _unrouted; skipped 1")

    add_route(config_file, "{topic: late/+, class: work, key: key}")  # what ops fix
    code, out = await cli("replay", "--all", cls=keys.UNROUTED)

    assert (code, out.splitlines()[0]) == (0, "replayed 1 into _unrouted")
    await wait_for(lambda: [e.id for e in probe("work").handled] == [event_id])
    assert probe("work").handled[0].payload == {"key": "k", "n": 7}
    assert await redis.xlen(keys.unrouted()) == 0


def add_route(config_file: Path, rule: str) -> None:
    """Put `rule` first in the config file's routes."""
    text = config_file.read_text()
    config_file.write_text(text.replace("routes:\n", f"routes:\n  - {rule}\n", 1))


async def test_two_replays_of_the_same_unrouted_events_route_each_into_its_class_once(
    service: Service, redis: Redis, http: aiohttp.ClientSession, config_file: Path
) -> None:
    """The class stream is in another slot than `_unrouted` on a cluster: the event is written
    first, de-duplicated by its entry's id, then deleted; two replays at one moment (two
    processes) still put each event into its class once."""
    ids = [
        (await post_accepted(http, service, f"late/{n}", {"key": "k", "n": n}))[0] for n in range(3)
    ]
    add_route(config_file, "{topic: late/+, class: work, key: key}")

    command = [sys.executable, "-m", "router", "dlq", "replay", "--all"]
    command += ["--class", keys.UNROUTED, "--config", str(config_file)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # the config's test actor
    replays = [
        await asyncio.create_subprocess_exec(*command, stdout=PIPE, env=env) for _ in range(2)
    ]
    outs = [(await replay.communicate())[0].decode() for replay in replays]

    assert [replay.returncode for replay in replays] == [0, 0]
    replayed = [int(re.search(r"replayed (\d+)", out)[1]) for out in outs]  # type: ignore[index]
    assert sum(replayed) == 3
    await wait_for(lambda: len(probe("work").handled) == 3, timeout=5)
    assert sorted(probe("work").handled_ids()) == sorted(ids)
    assert await redis.xlen(keys.stream("work")) == 3
    assert await redis.xlen(keys.unrouted()) == 0
