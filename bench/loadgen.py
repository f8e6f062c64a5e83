"""HTTP load generator for bench.throughput, run as its own process so it does not share the
service's event loop (or, on 2 cores, its core most of the time).

Protocol on stdin/stdout, one line each:
  child  -> "ready"          bodies encoded, keep-alive connections opened (GET /healthz)
  parent -> "go"             start posting; EOF on stdin instead means "abort"
  child  -> {json result}    accepted count, errors, seconds from "go" to the last 202

Every body is a JSON array of `--batch` events posted to `POST /events/<topic>` on
`--connections` concurrent keep-alive connections. A 503 is retried after its Retry-After.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from collections.abc import Sequence

ACTIONS = ("like_song", "skip_song", "change_song", "add_to_playlist")
MAX_RETRIES = 50
MAX_ERRORS_KEPT = 5


@dataclass
class Result:
    """What the generator reports back to bench.throughput."""

    accepted: int = 0
    posts: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    accept_seconds: float = 0.0
    cpu_seconds: float = 0.0


def make_event(seq: int, *, event_id: bool = False) -> dict[str, object]:
    """A music-interaction-like event: what the workload in DESIGN.md looks like.

    With `event_id`, the event carries a source id, which Switchyard de-duplicates on arrival.
    """
    event: dict[str, object] = {
        "seq": seq,
        "user_id": seq % 10_000,
        "action": ACTIONS[seq % len(ACTIONS)],
        "timestamp": "2025-10-27T14:03:00",
        "screen": "now_playing",
        "device": "android",
        "app_version": "8.9.2",
        "track": {"id": f"t{seq % 5000}", "artist": f"a{seq % 700}", "genre": "jazz"},
    }
    if event_id:
        event["event_id"] = f"bench-{seq}"
    return event


def make_bodies(events: int, batch: int, *, event_ids: bool = False) -> list[tuple[int, bytes]]:
    """(event count, JSON body) for every POST, encoded up front so posting stays cheap."""
    bodies = []
    for start in range(0, events, batch):
        stop = min(events, start + batch)
        chunk = [make_event(seq, event_id=event_ids) for seq in range(start, stop)]
        bodies.append((len(chunk), json.dumps(chunk, separators=(",", ":")).encode()))
    return bodies


def _error(result: Result, text: str) -> None:
    if len(result.errors) < MAX_ERRORS_KEPT:
        result.errors.append(text)


# --- the child's side of the line protocol, shared with bench.paced and bench.flood ---


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def tell_parent(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def ready_for_go(session: aiohttp.ClientSession, base_url: str, connections: int) -> bool:
    """Open `connections` keep-alive connections (GET /healthz each), say "ready", then wait
    for "go"; False when the parent aborted instead (EOF or another line)."""
    stdin = await stdin_reader()

    async def warm() -> None:
        async with session.get(f"{base_url}/healthz") as response:
            await response.read()

    await asyncio.gather(*(warm() for _ in range(connections)))
    tell_parent("ready")
    return (await stdin.readline()).strip() == b"go"


async def _post_all(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[tuple[int, bytes]],
    connections: int,
    result: Result,
) -> None:
    todo = list(reversed(bodies))
    headers = {"Content-Type": "application/json"}

    async def one_connection() -> None:
        while todo:
            count, body = todo.pop()
            for _ in range(MAX_RETRIES):
                async with session.post(url, data=body, headers=headers) as response:
                    text = (await response.read()).decode(errors="replace")
                result.posts += 1
                if response.status == 202:
                    result.accepted += count
                    break
                if response.status != 503:
                    _error(result, f"HTTP {response.status}: {text[:300]}")
                    break
                result.retries += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "0.05")))
            else:
                _error(result, f"gave up on a body after {MAX_RETRIES} answers of 503")

    async with asyncio.TaskGroup() as group:
        for _ in range(connections):
            group.create_task(one_connection())


async def run(
    base_url: str, topic: str, events: int, batch: int, connections: int, *, event_ids: bool
) -> int:
    bodies = make_bodies(events, batch, event_ids=event_ids)
    result = Result()
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Open every keep-alive connection before the clock starts.
        if not await ready_for_go(session, base_url, connections):
            return 1  # the parent went away or aborted
        started, cpu = time.perf_counter(), time.process_time()
        try:
            await _post_all(session, f"{base_url}/events/{topic}", bodies, connections, result)
        except* (aiohttp.ClientError, OSError) as group:
            result.errors.extend(repr(e) for e in group.exceptions[:MAX_ERRORS_KEPT])
        result.accept_seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu
    tell_parent(json.dumps(asdict(result)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--topic", default="bench/x")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--event-ids", action="store_true", help="give every event an event_id")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches us too; the parent reports it
        return asyncio.run(
            run(
                args.url.rstrip("/"),
                args.topic,
                args.events,
                args.batch,
                args.connections,
                event_ids=args.event_ids,
            )
        )
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
