"""Paced HTTP load: events POSTed on a fixed schedule, for latency measurements.

Run as its own process by bench.suite (so it does not share the service's event loop).
Open loop: POST i is due at start + i * batch / rate and is sent then, whether or not earlier
requests have been answered, so a slow service cannot slow the offered load down. A POST
carries one event (`--batch 1`, a JSON object) or a JSON array of `--batch` events.

Protocol on stdin/stdout, one line each (as bench.loadgen):
  child  -> "ready"          keep-alive connections opened
  parent -> "go"             start sending; EOF instead means "abort"
  child  -> {json result}    sent, accepted, errors, round-trip percentiles, lateness

Each event carries `timestamp` = the wall time it was sent (Unix seconds), which Switchyard
keeps as the source timestamp, so its source-to-ack histogram reads send-to-ack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from bench.harness import percentiles
from bench.loadgen import make_event, ready_for_go, tell_parent

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_ERRORS_KEPT = 5
HEADERS = {"Content-Type": "application/json"}


class _Sender:
    """Posts one event or a batch per request and keeps what came back."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.rtts: list[float] = []
        self.errors: list[str] = []
        self.accepted = 0
        self.refused = 0

    def _error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)

    async def post(self, seq: int, batch: int) -> None:
        now = time.time()
        events = [make_event(n) for n in range(seq * batch, (seq + 1) * batch)]
        for event in events:
            event["timestamp"] = now
        body = json.dumps(events[0] if batch == 1 else events, separators=(",", ":")).encode()
        sent = time.perf_counter()
        try:
            async with self.session.post(url=self.url, data=body, headers=HEADERS) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._error(repr(exc))
            return
        self.rtts.append(time.perf_counter() - sent)
        if status == 202:
            self.accepted += batch
        else:
            self.refused += batch
            self._error(f"HTTP {status}")


async def _schedule(sender: _Sender, total: int, rate: float, batch: int) -> tuple[float, float]:
    """Start POST i at start + i / rate (POSTs a second); returns (seconds, worst lateness)."""
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    late_max = 0.0
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - started) * rate) + 1)
        while sent < due:
            late_max = max(late_max, now - (started + sent / rate))
            task = asyncio.create_task(sender.post(sent, batch))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    seconds = time.perf_counter() - started
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return seconds, late_max


async def run(
    base_url: str, topic: str, *, rate: float, seconds: float, connections: int, batch: int
) -> int:
    posts = max(1, int(rate * seconds / batch))
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if not await ready_for_go(session, base_url, connections):
            return 1
        sender = _Sender(session, f"{base_url}/events/{topic}")
        cpu = time.process_time()
        send_seconds, late_max = await _schedule(sender, posts, rate / batch, batch)
        result: dict[str, Any] = {
            "sent": posts * batch,
            "posts": posts,
            "accepted": sender.accepted,
            "refused": sender.refused,
            "errors": sender.errors,
            "send_seconds": round(send_seconds, 4),
            "offered_rate": round(posts * batch / send_seconds, 1) if send_seconds else None,
            "late_max_ms": round(late_max * 1000, 3),
            "rtt": percentiles(sender.rtts),
            "cpu_seconds": round(time.process_time() - cpu, 4),
        }
    tell_parent(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="service base URL")
    parser.add_argument("--topic", default="bench/x")
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1, help="events per POST")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(
            run(
                url,
                args.topic,
                rate=args.rate,
                seconds=args.seconds,
                connections=args.connections,
                batch=args.batch,
            )
        )
    return 130


if __name__ == "__main__":
    sys.exit(main())
