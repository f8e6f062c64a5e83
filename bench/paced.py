"""Paced HTTP load: events POSTed on a fixed schedule, for latency measurements.

Run as its own process by bench.suite (so it does not share the service's event loop).
Open loop: POST i is due at start + i * batch / rate and is sent then, whether or not earlier
requests have been answered, so a slow service cannot slow the offered load down. A POST
carries one event (`--batch 1`, a JSON object) or a JSON array of `--batch` events.

Protocol on stdin/stdout, one line each (as bench.loadgen):
  child  -> "ready"          keep-alive connections opened
  parent -> "go"             start sending; EOF instead means "abort"
  child  -> {json result}    sent, accepted, errors, round-trip percentiles, lateness, and
                             the most POSTs written within any 5 ms

The sender writes its requests as bytes on keep-alive connections and frames the responses
with httptools, on uvloop where it is installed: it should take as little as it can of the
CPU that the service, redis-server and itself share on one machine.

Each event carries `timestamp` = the wall time it was sent (Unix seconds), which Switchyard
keeps as the source timestamp, so its source-to-ack histogram reads send-to-ack.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import httptools

from bench.harness import listening, percentiles
from bench.loadgen import make_event, stdin_reader, tell_parent
from router import loops

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_ERRORS_KEPT = 5
TICK_S = 0.001  # the sender wakes at most this often
BURST_WINDOW_S = 0.005


class _Connection(asyncio.Protocol):
    """One keep-alive connection with one request at a time, written as bytes and its response
    framed by httptools: a few microseconds of the sender's CPU per request, where a client
    session costs hundreds, which on a shared machine would be taken from the service."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answered: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self._answered is not None and not self._answered.done():
            self._answered.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._answered is not None and not self._answered.done():
            self._answered.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def request(self, raw: bytes) -> int:
        """Send one whole request; the response's status once it is all in."""
        if self._transport is None:
            raise ConnectionError("not connected")
        self._answered = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._answered

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Sender:
    """Posts one event or a batch per request over a few connections and keeps what came back."""

    def __init__(self, host: str, port: int, path: str, connections: int) -> None:
        self.host, self.port, self.path = host, port, path
        self.rtts: list[float] = []
        self.written: list[float] = []  # when each answered POST was written (perf_counter)
        self.errors: list[str] = []
        self.accepted = 0
        self.refused = 0
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue(maxsize=connections)
        self._all: list[_Connection] = []
        self._connections = connections

    async def open(self) -> None:
        """Open every connection once the server listens, and ask each for /healthz once, so
        that nothing is set up while the schedule runs."""
        await listening(self.port)  # a server that is still starting
        health = f"GET /healthz HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
        for _ in range(self._connections):
            connection = await self._connect()
            await connection.request(health)
            self._idle.put_nowait(connection)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        self._all.append(connection)  # closed at the end, a reconnection too
        return connection

    def close(self) -> None:
        for connection in self._all:
            connection.close()

    def _error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)

    def _request(self, body: bytes) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def post(self, seq: int, batch: int) -> None:
        now = time.time()
        events = [make_event(n) for n in range(seq * batch, (seq + 1) * batch)]
        for event in events:
            event["timestamp"] = now
        body = json.dumps(events[0] if batch == 1 else events, separators=(",", ":")).encode()
        raw = self._request(body)
        connection = await self._idle.get()  # all busy: this POST waits, and its time counts
        sent = time.perf_counter()
        try:
            if not connection.open:
                connection = await self._connect()
            status = await connection.request(raw)
        except OSError as exc:
            self._error(repr(exc))
            return
        finally:
            self._idle.put_nowait(connection)
        self.rtts.append(time.perf_counter() - sent)
        self.written.append(sent)
        if status == 202:
            self.accepted += batch
        else:
            self.refused += batch
            self._error(f"HTTP {status}")


def busiest(times: list[float], window_s: float) -> int:
    """The most of `times` within any `window_s`: how bursty the load the service saw was
    (a sender that fell behind catches up at once)."""
    ordered = sorted(times)
    within = (bisect.bisect_right(ordered, t + window_s) - i for i, t in enumerate(ordered))
    return max(within, default=0)


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
        # At least a tick: a shorter sleep is a busy wait on the loop's 1 ms timers, and the
        # sender's CPU would be taken from the service. What fell due meanwhile goes at once.
        await asyncio.sleep(max(TICK_S, started + sent / rate - time.perf_counter()))
    seconds = time.perf_counter() - started
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return seconds, late_max


async def run(
    base_url: str, topic: str, *, rate: float, seconds: float, connections: int, batch: int
) -> int:
    posts = max(1, int(rate * seconds / batch))
    address = urlsplit(base_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    sender = _Sender(host, port, f"/events/{topic}", connections)
    stdin = await stdin_reader()
    try:
        await sender.open()
        tell_parent("ready")
        if (await stdin.readline()).strip() != b"go":
            return 1
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
            "busiest_5ms": busiest(sender.written, BURST_WINDOW_S),
            "rtt": percentiles(sender.rtts),
            "cpu_seconds": round(time.process_time() - cpu, 4),
        }
    finally:
        sender.close()
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
        return loops.run(
            run(
                url,
                args.topic,
                rate=args.rate,
                seconds=args.seconds,
                connections=args.connections,
                batch=args.batch,
            ),
            loops.factory("auto"),
        )
    return 130


if __name__ == "__main__":
    sys.exit(main())
