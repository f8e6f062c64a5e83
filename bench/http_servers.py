"""The HTTP server options for a single-event POST, side by side: CPU per request.

    .venv/bin/python -m bench.http_servers [--rate 2000] [--seconds 5] [--rounds 2] [--quick]

Each server runs in a process of its own and answers `POST /events/<topic>` the same way:
the JSON body decoded, a small JSON 202 written back, no Redis. `bench.paced` posts one
event per request at `--rate` requests/s over 64 kept-alive connections from another
process, and the server's CPU (user + system, from /proc, its whole process group) is read
over the sending window: microseconds per request, and its ratio to aiohttp on asyncio's
loop, the server Switchyard used before. The servers take turns, `--rounds` times, so a
slow spell on the machine hits them all alike; the table has each one's median.

- `aiohttp`, `aiohttp + uvloop`: a web.Application with one route, as the service had it;
- `uvicorn + httptools`: an ASGI app under uvicorn, its httptools protocol, on uvloop;
- `granian`: the same ASGI app under granian (a Rust server), one worker;
- `listener`, `listener + uvloop`: `router.ingress.listener`, what the service runs now.

uvicorn and granian are not project dependencies: a server that is not installed is
reported as skipped (`pip install uvicorn granian` to include them).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from bench.harness import (
    child,
    expect_ready,
    group_cpu_seconds,
    listening,
    read_line,
    say,
)
from router.config import HttpConfig, ServiceConfig
from router.embedded.process import free_port
from router.ingress.http import Reply
from router.ingress.listener import Listener, ListenerSite

if TYPE_CHECKING:
    from collections.abc import Sequence

SERVERS = {  # name: (how to start it, the module it needs)
    "aiohttp": ("aiohttp", "asyncio"),
    "aiohttp + uvloop": ("aiohttp", "uvloop"),
    "uvicorn + httptools": ("uvicorn", "uvloop"),
    "granian": ("granian", "uvloop"),
    "listener": ("listener", "asyncio"),
    "listener + uvloop": ("listener", "uvloop"),
}
NEEDS = {"uvicorn": "uvicorn", "granian": "granian"}
BASELINE = "aiohttp"
ACCEPTED = orjson.dumps({"accepted": [{"id": "0" * 32, "class": "bench"}]})


# --- the servers ---


def answer(body: bytes) -> bytes:
    """What every server does with a request: the events decoded, the reply encoded."""
    orjson.loads(body)
    return ACCEPTED


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app for uvicorn and granian: `answer` for a POST, 200 for anything else."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    reply = answer(body) if scope["method"] == "POST" else b"{}"
    status = 202 if scope["method"] == "POST" else 200
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


class _Endpoint:
    """What the listener asks of the events endpoint, without Redis."""

    limits = ServiceConfig()

    async def answer(self, topic: str, body: bytes, content_type: str, encoding: str) -> Reply:
        return Reply(202, answer(body))

    def too_large(self) -> Reply:
        raise AssertionError("the bench sends small bodies")


async def serve_aiohttp(port: int) -> None:
    async def post(request: web.Request) -> web.Response:
        reply = answer(await request.read())
        return web.Response(body=reply, status=202, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/events/{topic:.+}", post)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await _until_stdin_closes()


async def serve_listener(port: int) -> None:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    listener = Listener(HttpConfig(), runner.server, _Endpoint())  # type: ignore[arg-type]
    await ListenerSite(runner, listener, "127.0.0.1", port).start()
    await _until_stdin_closes()


async def serve_uvicorn(port: int) -> None:
    import uvicorn  # noqa: PLC0415

    config = uvicorn.Config(
        asgi_app, host="127.0.0.1", port=port, http="httptools", loop="none",
        access_log=False, log_level="warning", lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await _until_stdin_closes()
    server.should_exit = True
    await serving


async def _until_stdin_closes() -> None:
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)


def serve(kind: str, loop: str, port: int) -> None:
    """Run one server until stdin closes (granian: the bench runs its own command)."""
    servers = {"aiohttp": serve_aiohttp, "listener": serve_listener, "uvicorn": serve_uvicorn}
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        uvloop.run(servers[kind](port))
    else:
        asyncio.run(servers[kind](port))


# --- the measurement ---


def installed(name: str) -> str | None:
    """Why the server cannot run here, or None."""
    module = NEEDS.get(SERVERS[name][0])
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return f"{module} is not installed (pip install {module})"


def server_argv(name: str, port: int) -> list[str]:
    kind, loop = SERVERS[name]
    if kind == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--loop", loop, "--no-ws",
                "--log-level", "warning", "bench.http_servers:asgi_app"]  # fmt: skip
    return [sys.executable, "-m", "bench.http_servers", "--serve", kind, "--loop", loop,
            "--port", str(port)]  # fmt: skip


async def measure(name: str, rate: float, seconds: float, logs: Path) -> dict[str, Any]:
    """One server, one paced run: its CPU per request and the round trips."""
    port = free_port()
    is_granian = SERVERS[name][0] == "granian"
    async with child(*server_argv(name, port), log=logs / "server.log", stdin=not is_granian,
                     stdout=not is_granian) as server:  # fmt: skip
        if is_granian:
            await listening(port)
        else:
            await expect_ready(server, name)
        async with child(
            sys.executable, "-m", "bench.paced", "--url", f"http://127.0.0.1:{port}",
            "--rate", str(rate), "--seconds", str(seconds), "--connections", "64",
            log=logs / "paced.log",
        ) as sender:  # fmt: skip
            await expect_ready(sender, "paced sender")  # it retries until the server answers
            before = group_cpu_seconds(server.pid)
            await say(sender, "go")
            sent: dict[str, Any] = json.loads(await read_line(sender, timeout_s=seconds + 60))
            cpu = group_cpu_seconds(server.pid) - before
    requests = sent["accepted"]
    return {
        "requests": requests,
        "refused": sent["refused"],
        "cpu_us_per_request": round(cpu / requests * 1e6, 1) if requests else None,
        "cpu_share": round(cpu / sent["send_seconds"], 3),
        "rtt": sent["rtt"],
    }


async def run(names: Sequence[str], rate: float, seconds: float, rounds: int) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    skipped = {name: why for name in names if (why := installed(name))}
    with tempfile.TemporaryDirectory(prefix="switchyard-http-") as temp:
        for round_number in range(1, rounds + 1):
            for name in names:
                if name in skipped:
                    continue
                figures = await measure(name, rate, seconds, Path(temp))
                results[name].append(figures)
                print(f"round {round_number}/{rounds} {name:<20} "
                      f"{figures['cpu_us_per_request']} us/request", file=sys.stderr)  # fmt: skip
    return {"rate": rate, "seconds": seconds, "rounds": rounds, "skipped": skipped,
            "servers": {name: _median(runs) for name, runs in results.items() if runs}}  # fmt: skip


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = [r["cpu_us_per_request"] for r in runs if r["cpu_us_per_request"] is not None]
    return {
        "cpu_us_per_request": statistics.median(cpu) if cpu else None,
        "rtt_p50_ms": statistics.median(r["rtt"].get("p50_ms", 0) for r in runs),
        "rtt_p99_ms": statistics.median(r["rtt"].get("p99_ms", 0) for r in runs),
        "refused": sum(r["refused"] for r in runs),
        "runs": runs,
    }


def print_table(result: dict[str, Any]) -> None:
    servers = result["servers"]
    base = servers.get(BASELINE, {}).get("cpu_us_per_request")
    print(f"\nOne event per POST at {result['rate']:,.0f} requests/s for {result['seconds']:g} s, "
          f"median of {result['rounds']} round(s); ratios against {BASELINE}")  # fmt: skip
    print(f"{'server':<22}{'cpu us/request':>16}{'vs ' + BASELINE:>14}{'rtt p50 ms':>12}"
          f"{'rtt p99 ms':>12}")  # fmt: skip
    for name, figures in servers.items():
        cpu = figures["cpu_us_per_request"]
        ratio = f"{cpu / base:.2f}x" if cpu and base else "-"
        print(f"{name:<22}{cpu:>16.1f}{ratio:>14}{figures['rtt_p50_ms']:>12.2f}"
              f"{figures['rtt_p99_ms']:>12.2f}")  # fmt: skip
    for name, why in result["skipped"].items():
        print(f"{name:<22} skipped: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_servers", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--rate", type=float, default=2_000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the server processes
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.loop, args.port)
        return 0
    seconds, rounds = (2.0, 1) if args.quick else (args.seconds, args.rounds)
    result = asyncio.run(run(list(SERVERS), args.rate, seconds, rounds))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
