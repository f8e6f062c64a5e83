"""The HTTP ingress against a hostile client, with the service in a process of its own: a body
that inflates far past its size, and requests that are not HTTP at all."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import routed_class
from servers import ServiceProcess, free_port, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp

pytestmark = pytest.mark.integration

INFLATED_BYTES = 60 * 1024 * 1024
FORWARDED = routed_class("things", "actors.builtin:Forward", 'stream: "test:forwarded"')


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
async def service(
    redis_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[ServiceProcess, int]]:
    port = free_port()
    config = tmp_path / "switchyard.yaml"
    config.write_text(f"""
service: {{log_format: json}}
redis: {{url: "{redis_url}"}}
http: {{port: {port}}}
lanes: [{{name: high}}]
{FORWARDED}""")
    process = ServiceProcess(config, cwd=tmp_path)
    await process.start()

    async def healthy() -> bool:
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                return response.status == 200
        except OSError:
            return False

    try:
        await wait_for(healthy, timeout=20)
        yield process, port
    finally:
        await process.close()


async def test_gzip_bodies_that_inflate_past_the_limit_are_refused_before_they_cost_memory(
    service: tuple[ServiceProcess, int], http: aiohttp.ClientSession
) -> None:
    """Eight 60 MB bombs at once (main: RSS from 67 to 543 MB, refused only once inflated)."""
    process, port = service
    assert process.pid is not None
    bomb = gzip.compress(json.dumps({"key": "k", "pad": " " * INFLATED_BYTES}).encode())
    assert len(bomb) < 100_000
    before = peak_rss_bytes(process.pid)
    url = f"http://127.0.0.1:{port}/events/things/1"
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}

    async def send() -> int:
        async with http.post(url, data=bomb, headers=headers) as response:
            return response.status

    statuses = await asyncio.gather(*(send() for _ in range(8)))

    assert statuses == [413] * 8
    grown = peak_rss_bytes(process.pid) - before
    # at most max_body_bytes (4 MiB) of output each, and the compressed bodies themselves
    assert grown < 40 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.0f} MB"
    small = gzip.compress(json.dumps({"key": "k", "n": 1}).encode())
    async with http.post(url, data=small, headers=headers) as response:
        assert response.status == 202


async def test_a_malformed_request_is_one_json_log_line_without_a_traceback(
    service: tuple[ServiceProcess, int],
) -> None:
    """Main wrote aiohttp's parser traceback, many lines of plain text, per bad request."""
    process, port = service
    for garbage in (
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /events/things/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        await writer.drain()
        await reader.read()  # the server answers 400 and closes
        writer.close()
        await writer.wait_closed()
    await wait_for(lambda: any("Error handling request" in line for line in process.lines))

    assert await process.terminate() == 0
    assert not [line for line in process.lines if not line.startswith("{")], process.tail()
    assert all(isinstance(json.loads(line), dict) for line in process.lines)
    assert "Traceback" not in "\n".join(process.lines)
