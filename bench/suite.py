"""The benchmark against peers: throughput, latency, priority isolation and memory, in one run.

    .venv/bin/python -m bench.suite [--quick] [--json out.json] [--soak SECONDS]
                                    [--part NAME ...] [--no-peers] [--no-install]

One private redis-server (EmbeddedRedis, append-only off, in a temporary directory, on a free
port) serves every part; it is emptied before each experiment and stopped at the end. The
peers (Dramatiq, Celery, arq, taskiq-redis) run from their own venv, bench/.peers-venv, which is
created on first use (see bench/peers_env.py); without it they are skipped, with the reason.

Parts (bench/README.md says what each figure means):
  throughput  bench.throughput's scenarios (bare redis.asyncio loop, Switchyard e2e over HTTP,
              Switchyard consume only), then every peer and Switchyard draining N pre-enqueued
              no-op tasks with one worker process
  latency     2,000 events/s for 10 s, ingest to handler start and to ack: XADDed directly,
              POSTed one and ten at a time, both again with the lane in a worker process,
              and one at a time at 5,000 events/s
  priority    a flooded low lane and a high lane at 50 events/s, in Switchyard; then Celery
              and Dramatiq with priorities, a low-priority backlog and high-priority tasks
  memory      the RSS of a `switchyard run` process consuming a 1,000,000-entry backlog slowly
Every process the suite starts is stopped at the end, on Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from bench import throughput
from bench.harness import BenchError, checkpoint, environment, progress, to_the_end
from bench.latency import LatencySettings, run_latency
from bench.memory import MemorySettings, run_memory
from bench.peer_bench import PEERS, Context, drain_all, priority_peer
from bench.peers_env import DEFAULT_VENV, PeersEnv, ensure
from bench.priority import PrioritySettings, run_switchyard
from router import loops
from router.embedded.redis import EmbeddedRedis
from router.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

PARTS = ("throughput", "latency", "priority", "memory")
DEFAULT_PEER_RATE = 2_000.0  # a peer's drain rate when the throughput part did not run
DEFAULT_SWITCHYARD_RATE = 30_000.0  # and Switchyard's consume-only rate


@dataclass(frozen=True)
class SuiteSettings:
    quick: bool = False
    parts: tuple[str, ...] = PARTS
    peers: bool = True
    install: bool = True
    peers_venv: Path = DEFAULT_VENV
    throughput: throughput.Settings = field(
        default_factory=lambda: throughput.Settings(events=100_000, runs=3)
    )
    peer_tasks: int = 5_000
    peer_runs: int = 2
    switchyard_drain_runs: int = 3
    latency: LatencySettings = field(default_factory=LatencySettings)
    priority: PrioritySettings = field(default_factory=PrioritySettings)
    peer_backlog_max: int = 100_000
    memory: MemorySettings = field(default_factory=MemorySettings)

    @classmethod
    def quick_run(cls) -> SuiteSettings:
        return cls(
            quick=True,
            throughput=throughput.Settings(events=5_000, runs=1, warmup=False),
            peer_tasks=1_000,
            peer_runs=1,
            latency=LatencySettings(seconds=2.0, warmup_seconds=0.5),
            priority=PrioritySettings(backlog=20_000, seconds=5.0),
            peer_backlog_max=20_000,
            memory=MemorySettings(backlog=100_000, seconds=6.0),
        )


# --- the parts ---


@dataclass
class Suite:
    settings: SuiteSettings
    url: str
    admin: Redis
    work: Path
    peers: PeersEnv
    results: dict[str, Any] = field(default_factory=dict)

    def context(self) -> Context | None:
        if self.peers.python is None:
            return None
        return Context(self.url, self.admin, self.peers.python, self.work)

    async def throughput(self) -> dict[str, Any]:
        s = self.settings
        run = throughput.Run(self.url, self.admin, s.throughput)
        samples = await throughput.run_scenarios(run)
        rows = throughput.summarise(samples, s.throughput)
        progress(f"peers: {s.peer_tasks:,} no-op tasks each")
        drains = await drain_all(
            self.context(),
            self.url,
            self.admin,
            s.peer_tasks,
            switchyard_runs=s.switchyard_drain_runs,
            peer_runs=s.peer_runs,
            concurrency=s.throughput.concurrency,
        )
        return {"switchyard": rows, "drain": drains, "samples": [asdict(x) for x in samples]}

    async def latency(self) -> dict[str, Any]:
        return await run_latency(self.url, self.admin, self.settings.latency, self.work)

    async def priority(self) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {
            "switchyard": await run_switchyard(self.url, self.admin, s.priority, self.work)
        }
        # Without the flood, like the peers: the backlog alone must outlast the window.
        rate = self._rate("switchyard", "consume", DEFAULT_SWITCHYARD_RATE)
        backlog = int(
            min(1_000_000, max(s.priority.backlog, rate * (s.priority.seconds + 2) * 1.3))
        )
        out["switchyard_backlog_only"] = await run_switchyard(
            self.url, self.admin, replace(s.priority, backlog=backlog), self.work, flood=False
        )
        ctx = self.context()
        peers: dict[str, Any] = {}
        for peer in PEERS if ctx is not None else ():
            if not peer.priorities:
                continue
            assert ctx is not None
            checkpoint()
            rate = self._rate("drain", peer.name, DEFAULT_PEER_RATE)
            window = s.priority.seconds + 1.5  # steady-state second + the window + margin
            backlog = int(min(s.peer_backlog_max, max(2_000, rate * window * 1.3)))
            settle = min(120.0, max(5.0, backlog / rate))
            try:
                peers[peer.name] = await priority_peer(
                    ctx,
                    peer,
                    backlog=backlog,
                    rate=s.priority.high_rate,
                    seconds=s.priority.seconds,
                    settle_s=settle,
                )
            except BenchError as exc:
                progress(f"peer {peer.name} failed: {exc}")
                peers[peer.name] = {"error": str(exc), "label": peer.label}
        out["peers"] = peers
        return out

    def _rate(self, table: str, name: str, default: float) -> float:
        """A drain rate measured by the throughput part, or `default` when it did not run."""
        found = self.results.get("throughput", {}).get(table, [])
        rows = found.get("rows", []) if isinstance(found, dict) else found
        for row in rows:
            if name in (row.get("peer"), row.get("scenario")) and row.get("events_per_s"):
                return float(row["events_per_s"])
        return default

    async def memory(self) -> dict[str, Any]:
        try:
            return await run_memory(self.url, self.admin, self.settings.memory, self.work)
        finally:
            await to_the_end(self._flush())  # give the server its memory back

    async def _flush(self) -> None:
        await self.admin.flushall()


async def run_suite(settings: SuiteSettings) -> dict[str, Any]:
    document: dict[str, Any] = {"settings": _jsonable(asdict(settings))}
    wants_peers = settings.peers and {"throughput", "priority"} & set(settings.parts)
    if wants_peers:
        peers = await ensure(settings.peers_venv, create=settings.install)
        if peers.python is None:
            progress(f"peers skipped: {peers.reason}")
    else:
        peers = PeersEnv(None, "not asked for (--no-peers or no part that uses them)")
    with tempfile.TemporaryDirectory(prefix="switchyard-suite-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        await server.start()
        admin = Redis.from_url(server.url)
        try:
            document["environment"] = {
                **await environment(admin),
                "peers": peers.versions or {},
                "peers_skipped": None if peers.python else peers.reason,
            }
            progress(f"private redis-server {document['environment']['redis_version']} at "
                     f"{server.url}; parts: {', '.join(settings.parts)}")  # fmt: skip
            suite = Suite(settings, server.url, admin, Path(tmp), peers, document)
            runners: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
                "throughput": suite.throughput,
                "latency": suite.latency,
                "priority": suite.priority,
                "memory": suite.memory,
            }
            for part in settings.parts:
                checkpoint()
                progress(f"\n=== {part} ===")
                started = time.perf_counter()
                try:
                    document[part] = await runners[part]()
                except Exception as exc:  # one broken part must not hide the others' figures
                    traceback.print_exc()
                    document[part] = {"error": f"{type(exc).__name__}: {exc}"}
                document[part]["part_seconds"] = round(time.perf_counter() - started, 1)
                PRINTERS[part](document[part])
        finally:
            await to_the_end(admin.aclose())
            await to_the_end(server.stop())
    if "environment" in document:
        document["environment"]["loadavg_at_end"] = list(os.getloadavg())
    document["targets"] = targets(document, settings)
    print_summary(document)
    return document


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- tables ---


def _f(value: Any, spec: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _x(value: float | None, spec: str = ".2f") -> str:
    """A ratio: '0.45x', or '-' when there is nothing to compare with."""
    return "-" if value is None else f"{value:{spec}}x"


def _table(header: Sequence[tuple[str, int]], rows: Sequence[Sequence[str]]) -> None:
    """Columns of the given widths (negative: left-aligned); the first grows to its longest."""
    (name, width), *rest = header
    longest = max([len(name), *(len(row[0]) for row in rows)])
    header = [(name, -max(-width, longest) if width < 0 else max(width, longest)), *rest]
    line = " ".join(f"{name:>{width}}" if width > 0 else f"{name:<{-width}}"
                    for name, width in header)  # fmt: skip
    print(line)
    print("-" * len(line))
    for row in rows:
        print(" ".join(f"{cell:>{width}}" if width > 0 else f"{cell:<{-width}}"
                       for cell, (_, width) in zip(row, header, strict=True)))  # fmt: skip


def _error(part: str, result: dict[str, Any]) -> bool:
    if "error" in result:
        print(f"\n{part}: FAILED: {result['error']}")
        return True
    return False


def print_throughput(result: dict[str, Any]) -> None:
    if _error("throughput", result):
        return
    rows = {row["scenario"]: row for row in result["switchyard"]}
    bare = rows.get("baseline", {}).get("events_per_s")
    drain = result["drain"]
    peer_rows = [r for r in drain["rows"] if r["peer"] != "switchyard"]
    fastest = max((r["events_per_s"] for r in peer_rows), default=None)
    print(f"\nThroughput, no-op handlers; ratios against the bare loop of this run "
          f"({_f(bare)} events/s)")  # fmt: skip
    header = [("system", -52), ("events/s", 9), ("vs bare", 8), ("vs best peer", 12),
              ("cpu us/ev", 9), ("redis calls/ev", 14)]  # fmt: skip
    table: list[list[str]] = []
    for name in ("baseline", "switchyard", "accept", "consume"):
        row = rows.get(name)
        if row is None:
            continue
        calls = row["redis_calls_last_run"]
        per_event = sum(calls.values()) / row["events"] if calls and name != "accept" else None
        table.append([
            row["description"] + (f" ({row['events']:,})" if name != "accept" else ""),
            _f(row["events_per_s"]), _x(row["ratio_to_baseline"]),
            _x(row["events_per_s"] / fastest if fastest else None, ".1f"),
            _f(row["cpu_us_per_event"], ".1f"), _f(per_event, ".2f"),
        ])  # fmt: skip
    for row in drain["rows"]:
        label = f"{row['label']}: drain {drain['tasks']:,}, 1 worker"
        if row["peer"] == "switchyard":
            label = f"Switchyard consume only, drained like the peers ({drain['tasks']:,})"
        table.append([
            label, _f(row["events_per_s"]), _x(row["events_per_s"] / bare if bare else None, ".3f"),
            _x(row["events_per_s"] / fastest if fastest else None, ".1f"),
            _f(row["cpu_us_per_task"], ".1f"), _f(row["redis_calls_per_task"], ".2f"),
        ])  # fmt: skip
    _table(header, table)
    for row in peer_rows:
        print(f"  {row['label']}: {row['setup']}; enqueue {_f(row['enqueue_per_s'])}/s, "
              f"worker start-up {row['startup_seconds']:.2f} s")  # fmt: skip
    for name, error in drain["errors"].items():
        print(f"  {name}: FAILED: {error.splitlines()[0]}")
    print("Peers and the 'drained like the peers' row: N tasks enqueued first, then timed from "
          "the first finished task to the last.\ncpu us/ev: the worker's (service's) CPU per "
          "event; redis calls/ev: Redis commands per event.")  # fmt: skip


def _lat(summary: dict[str, Any], exact: bool) -> list[str]:
    if not summary.get("count"):
        return ["0", "-", "-", "-"]
    top = summary.get("max_ms") if exact else summary.get("max_under_ms")
    return [
        _f(summary["count"]), _f(summary.get("p50_ms"), ".2f"), _f(summary.get("p99_ms"), ".2f"),
        ("" if exact else "<=") + _f(top, ".2f"),
    ]  # fmt: skip


def print_latency(result: dict[str, Any]) -> None:
    if _error("latency", result):
        return
    s = result["settings"]
    bare = result["bare"]
    print(f"\nLatency at a paced {s['rate']:,.0f} events/s for {s['seconds']:g} s (after a "
          f"{s['warmup_seconds']:g} s warm-up); target p99 <= {s['target_ms']:g} ms")  # fmt: skip
    header = [("measured", -62), ("events", 8), ("p50 ms", 8), ("p99 ms", 8), ("max ms", 9),
              (f"<={s['target_ms']:g} ms", 9)]  # fmt: skip
    rows = [["bare redis.asyncio loop, 1 process: XADD -> XACK (exact)",
             *_lat(bare["latency"], True), _f(bare["share_within"], ".1%")]]  # fmt: skip
    if slow := result.get("bare_at_post_pace"):
        rows.append([f"bare loop at {slow['rate']:,.0f}/s, the pace of the biggest POSTs (exact)",
                     *_lat(slow["latency"], True), _f(slow["share_within"], ".1%")])  # fmt: skip
    if handwritten := result.get("bare_http"):
        rows.append(["hand-written aiohttp + redis.asyncio, 1 event/POST: handler -> XACK (exact)",
                     *_lat(handwritten["latency"], True),
                     _f(handwritten["share_within"], ".1%")])  # fmt: skip
    if direct := result.get("direct"):
        ack = direct["ingest_to_ack"]
        rows += [
            ["Switchyard, direct Redis ingress: ingest -> handler start (exact)",
             *_lat(direct["ingest_to_handler_start"], True), ""],
            ["Switchyard, direct Redis ingress: ingest -> ack (histogram)", *_lat(ack, False),
             _f(ack.get("share_within"), ".1%")],
        ]  # fmt: skip
    for run in result["switchyard"]:
        per = _per_post(run, s["rate"])
        if run.get("target_ms", s["target_ms"]) != s["target_ms"]:
            per += f" (<= column: {run['target_ms']:g} ms)"
        ack = run["ingest_to_ack"]
        if "ingest_to_handler_start" in run:  # not with a worker process: its actor is there
            rows.append([f"Switchyard, {per}: ingest -> handler start (exact)",
                         *_lat(run["ingest_to_handler_start"], True), ""])  # fmt: skip
        rows += [
            [f"Switchyard, {per}: ingest -> ack (histogram)", *_lat(ack, False),
             _f(ack.get("share_within"), ".1%")],
            [f"Switchyard, {per}: send -> ack (histogram, incl. HTTP)",
             *_lat(run["send_to_ack"], False), ""],
            [f"Switchyard, {per}: POST round trip (client)", "",
             *_lat(run["post_round_trip"], True)[1:], ""],
        ]  # fmt: skip
    _table(header, rows)
    for run in result["switchyard"]:
        lag = run.get("loop_lag", {}).get("p99_ms")
        print(f"  {_per_post(run, s['rate'])}: {run['posts_per_s']:,.0f} POSTs/s, "
              f"{run['accepted']:,}/{run['sent']:,} accepted; service CPU "
              f"{run['service_cpu_share']:.0%} of a core, sender {run['sender_cpu_share']:.0%}"
              + ("" if lag is None else f"; service loop lag p99 {_f(lag, '.2f')} ms")
              + f"; at most {run['sender_busiest_5ms']} POSTs sent in 5 ms (pace "
                f"{run['posts_per_s'] * 0.005:g}){_machine(run)}")  # fmt: skip
    if direct:
        print(f"  direct: XADD one envelope at a time from the service's process (like the bare "
              f"loop); service CPU {direct['cpu_share']:.0%} of a core, loop lag p99 "
              f"{_f(direct['loop_lag'].get('p99_ms'), '.2f')} ms{_machine(direct)}")  # fmt: skip
    if handwritten:
        busiest = handwritten["sender_busiest_5ms"]
        print(f"  hand-written HTTP loop: one process, CPU {handwritten['cpu_share']:.0%} of a "
              f"core, sender {handwritten['sender_cpu_share']:.0%}; at most {busiest} POSTs "
              f"sent in 5 ms{_machine(handwritten)}")  # fmt: skip
    print(f"  bare loop CPU {bare['cpu_share']:.0%} of a core{_machine(bare)}")
    if bare.get("stolen_share") is not None:
        print("  stolen: the machine's CPU time the host took meanwhile (a virtual machine's "
              "steal)")  # fmt: skip
    if bare.get("stalls"):
        print("  held up: how often a process beside the run that only sleeps, 1 ms at a time, "
              "woke over 2 ms late (bench.stalls):\n    the machine's own noise meanwhile, "
              "which no code in the service can take back")  # fmt: skip


def _bare_at_pace(latency: dict[str, Any], run: dict[str, Any]) -> str:
    """For POSTs of several events: the bare loop paced as those POSTs arrive, if measured."""
    slow = latency.get("bare_at_post_pace")
    if not slow or run.get("posts_per_s") != round(slow["rate"], 1):
        return ""
    return (f", at {slow['rate']:,.0f}/s p99 {_f(slow['latency'].get('p99_ms'), '.2f')} ms "
            f"({_f(slow['share_within'], '.2%')} within)")  # fmt: skip


def _handwritten(latency: dict[str, Any], run: dict[str, Any]) -> str:
    """For one event per POST in the service's process at the main pace: the hand-written
    HTTP loop, if measured."""
    handwritten = latency.get("bare_http")
    same_pace = run.get("rate", latency["settings"]["rate"]) == latency["settings"]["rate"]
    if not handwritten or run["events_per_post"] != 1 or run.get("lane_workers") or not same_pace:
        return ""
    return (f"; hand-written HTTP loop p99 {_f(handwritten['latency'].get('p99_ms'), '.2f')} ms "
            f"({_f(handwritten['share_within'], '.2%')} within)")  # fmt: skip


def _machine(run: dict[str, Any]) -> str:
    """What the machine did during the run: the CPU time the host took, and how often it
    held up an idle process."""
    share = run.get("stolen_share")
    return ("" if share is None else f"; stolen {share:.1%}") + _stalls(run)


def _stalls(run: dict[str, Any]) -> str:
    """How often the machine held up an idle process beside the run (bench.stalls)."""
    stalls = run.get("stalls")
    if not stalls:
        return ""
    return (f"; idle process held up >2 ms {stalls['stalls']} times, "
            f"{stalls['stalled_ms']:g} ms in all")  # fmt: skip


def _per_post(run: dict[str, Any], rate: float | None = None) -> str:
    """How a run posted: events per POST, where the lane ran, and its rate when it is not
    the part's own (`rate`)."""
    count = run["events_per_post"]
    where = ", lane in a worker" if run.get("lane_workers") else ""
    pace = "" if run.get("rate", rate) == rate else f" at {run['rate']:,.0f}/s"
    return f"{count} event{'s' if count > 1 else ''}/POST{where}{pace}"


def print_priority(result: dict[str, Any]) -> None:
    if _error("priority", result):
        return
    flood, calm = result["switchyard"], result.get("switchyard_backlog_only")
    s = flood["settings"]
    print(
        f"\nPriority isolation: high-priority events at {s['high_rate']:g}/s for "
        f"{s['seconds']:g} s while the low lane is saturated. Switchyard: capacity "
        f"{s['capacity']}, low lane min_share {s['low_min_share']}; 'flood' = "
        f"{s['backlog']:,} backlog + one process XADDing {_f(flood['flood']['rate'])}/s"
    )
    header = [("system and what is timed", -62), ("events", 7), ("p50 ms", 8), ("p99 ms", 8),
              ("max ms", 9), ("low/s during", 12)]  # fmt: skip
    rows: list[list[str]] = []
    for name, run in (("flood", flood), ("backlog only", calm)):
        if run is None:
            continue
        high = run["high"]
        low = _f(run["low"]["per_s_during"])
        what = f"Switchyard, {name}"
        if name != "flood":
            what += f" ({run['settings']['backlog']:,})"
        rows += [
            [f"{what}: ingest -> handler start", *_lat(high["ingest_to_handler_start"], True),
             low],
            [f"{what}: send -> handler start (incl. HTTP)",
             *_lat(high["send_to_handler_start"], True), ""],
            [f"{what}: ingest -> ack", *_lat(high["ingest_to_ack"], False), ""],
            [f"{what}: send -> ack (incl. HTTP)", *_lat(high["send_to_ack"], False), ""],
        ]  # fmt: skip
    for peer in result.get("peers", {}).values():
        if "error" in peer:
            rows.append([f"{peer['label']}: FAILED", "", "", "", "", ""])
            continue
        rows.append([
            f"{peer['label']}, backlog only ({peer['backlog']:,}): enqueue -> start",
            *_lat(peer["latency"], True), _f(peer["low_per_s_during"]),
        ])  # fmt: skip
    _table(header, rows)
    print(
        "Switchyard: ingest = the service stamps the event (the HTTP request has been read); "
        "send = the sender's time.time() just before the POST; ack = XACK returned.\nPeers: "
        "the sender's time.time() just before the enqueue call, to task start: compare with "
        "Switchyard's send -> handler start."
    )
    for name, run in (("flood", flood), ("backlog only", calm)):
        if run is None:
            continue
        low, lag = run["low"], run["loop_lag"]
        print(f"  Switchyard {name}: low lane {low['share_of_processed']:.1%} of processed "
              f"(min share {low['min_share']:.0%}), slowest second "
              f"{_f(low['min_per_s_in_any_second'])}/s, slots held: mean {low['slots_used_mean']}, "
              f">= min_slots ({low['min_slots']}) in "
              f"{_f(low['samples_at_min_slots_or_more'], '.1%')} of 100 ms samples, backlog left "
              f"{_f(low['backlog_at_end'])}; service CPU {run['service_cpu_share']:.0%} of a "
              f"core; loop lag p99 {_f(lag.get('p99_ms'), '.2f')} ms")  # fmt: skip
    for peer in result.get("peers", {}).values():
        if "error" in peer:
            print(f"  {peer['label']}: FAILED: {peer['error'].splitlines()[0]}")
            continue
        print(f"  {peer['label']}: {peer['setup']}; {peer['high_started']}/{peer['high_sent']} "
              f"high-priority tasks started (waited {peer['waited_after_window_s']:.0f} s after "
              f"the window); low backlog left at the end of the window: "
              f"{peer['low_left_at_end']:,}")  # fmt: skip


def print_memory(result: dict[str, Any]) -> None:
    if _error("memory", result):
        return
    s = result["settings"]
    print(f"\nMemory: `switchyard run` with {s['backlog']:,} entries backlogged, actor "
          f"{s['delay_ms']:g} ms/event x concurrency {s['concurrency']}, sampled "
          f"{s['seconds']:g} s")  # fmt: skip
    _table(
        [("RSS start MB", 12), ("max MB", 8), ("end MB", 8), ("peak (HWM) MB", 13),
         ("processed", 10), ("events/s", 9), ("backlog at end", 14), ("redis MB", 9)],
        [[_f(result["rss_start_mb"], ".1f"), _f(result["rss_max_mb"], ".1f"),
          _f(result["rss_end_mb"], ".1f"), _f(result["rss_peak_hwm_mb"], ".1f"),
          _f(result["processed"]), _f(result["processed_per_s"]), _f(result["backlog_at_end"]),
          _f(result["redis_used_mb"])]],
    )  # fmt: skip
    print(
        f"start-up {result['startup_seconds']:.2f} s; SIGTERM to exit "
        f"{result['stop_seconds']:.2f} s (exit code {result['exit_code']})"
    )


PRINTERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "throughput": print_throughput,
    "latency": print_latency,
    "priority": print_priority,
    "memory": print_memory,
}


# --- targets ---


def targets(document: dict[str, Any], settings: SuiteSettings) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure it is judged on and whether it was met."""
    out: list[dict[str, Any]] = []

    def add(name: str, figure: str, met: bool | None, note: str = "") -> None:
        out.append({"target": name, "figure": figure, "met": met, "note": note})

    tp = document.get("throughput", {})
    if "switchyard" in tp:
        rows = {row["scenario"]: row for row in tp["switchyard"]}
        e2e, consume = rows.get("switchyard", {}), rows.get("consume", {})
        ratio = e2e.get("ratio_to_baseline")
        add("Switchyard e2e >= 50% of the bare loop (same run)",
            f"e2e {_f(ratio, '.2f')}x; consume-only {_f(consume.get('ratio_to_baseline'), '.2f')}x",
            None if ratio is None else ratio >= 0.5)  # fmt: skip
        add("Switchyard e2e events/s >= 1.0x the bare loop (same run)", f"e2e {_f(ratio, '.2f')}x",
            None if ratio is None else ratio >= 1.0)  # fmt: skip
        bare_cpu = rows.get("baseline", {}).get("cpu_us_per_event")
        e2e_cpu = e2e.get("cpu_us_per_event")
        cpu_ratio = e2e_cpu / bare_cpu if e2e_cpu and bare_cpu else None
        add("service CPU per event e2e <= 1.0x the bare loop's",
            f"{_f(e2e_cpu, '.1f')} against {_f(bare_cpu, '.1f')} us/event: {_f(cpu_ratio, '.2f')}x",
            None if cpu_ratio is None else cpu_ratio <= 1.0)  # fmt: skip
        peers = [r for r in tp["drain"]["rows"] if r["peer"] != "switchyard"]
        if peers and e2e:
            best = max(peers, key=lambda r: r["events_per_s"])
            times = e2e["events_per_s"] / best["events_per_s"]
            drained = next(r for r in tp["drain"]["rows"] if r["peer"] == "switchyard")
            add(">= 10x the fastest peer, per process",
                f"e2e {times:.1f}x {best['label']} ({_f(best['events_per_s'])}/s); drained "
                f"like the peers {drained['events_per_s'] / best['events_per_s']:.1f}x",
                times >= 10)  # fmt: skip
        else:
            add(">= 10x the fastest peer, per process", "peers not measured", None)
    lat = document.get("latency", {})
    if direct := lat.get("direct"):
        share = direct["ingest_to_ack"].get("share_within")
        add(f"p99 <= {settings.latency.target_ms:g} ms end to end at "
            f"{settings.latency.rate:,.0f}/s, direct Redis ingress",
            f"ingest->ack p99 {_f(direct['ingest_to_ack'].get('p99_ms'), '.2f')} ms "
            f"({_f(share, '.2%')} within); bare loop p99 "
            f"{_f(lat['bare']['latency'].get('p99_ms'), '.2f')} ms",
            None if share is None else share >= 0.99)  # fmt: skip
    for run in lat.get("switchyard", []):
        ack = run["ingest_to_ack"]
        share = ack.get("share_within")
        rate = run.get("rate", settings.latency.rate)
        add(f"p99 <= {run.get('target_ms', settings.latency.target_ms):g} ms end to end at "
            f"{rate:,.0f}/s, {_per_post(run, rate)}",
            f"ingest->ack p99 {_f(ack.get('p99_ms'), '.2f')} ms ({_f(share, '.2%')} within); "
            f"bare loop p99 {_f(lat['bare']['latency'].get('p99_ms'), '.2f')} ms"
            + _bare_at_pace(lat, run) + _handwritten(lat, run) + _stalls(run),
            None if share is None else share >= 0.99)  # fmt: skip
    pr = document.get("priority", {}).get("switchyard", {})
    calm = document.get("priority", {}).get("switchyard_backlog_only", {})
    if "high" in pr:
        ack = pr["high"]["ingest_to_ack"]
        share = ack.get("share_within")
        low = pr["low"]
        calm_p99 = calm.get("high", {}).get("ingest_to_ack", {}).get("p99_ms")
        add(f"high-lane p99 <= {settings.priority.high_target_ms:g} ms during the low flood",
            f"ingest->ack p99 {_f(ack.get('p99_ms'), '.2f')} ms ({_f(share, '.2%')} within); "
            f"handler start p99 {_f(pr['high']['ingest_to_handler_start'].get('p99_ms'), '.2f')}"
            f" ms; backlog only, no flood: ingest->ack p99 {_f(calm_p99, '.2f')} ms",
            None if share is None else share >= 0.99)  # fmt: skip
        add("low lane keeps >= its min share",
            f"{low['share_of_processed']:.1%} of processed, {_f(low['per_s_during'])}/s, "
            f"slowest second {_f(low['min_per_s_in_any_second'])}/s",
            low["share_of_processed"] >= low["min_share"]
            and (low["min_per_s_in_any_second"] or 0) > 0)  # fmt: skip
    mem = document.get("memory", {})
    if "rss_max_mb" in mem:
        limit = settings.memory.limit_mb
        add(f"service RSS <= {limit:g} MB with {settings.memory.backlog:,} backlogged",
            f"start {mem['rss_start_mb']:.0f} / max {mem['rss_max_mb']:.0f} / end "
            f"{mem['rss_end_mb']:.0f} MB", mem["rss_max_mb"] <= limit)  # fmt: skip
    return out


def print_summary(document: dict[str, Any]) -> None:
    print("\n=== summary: the issue's targets ===")
    verdicts = {True: "MET", False: "NOT MET", None: "n/a"}
    for target in document["targets"]:
        print(f"{verdicts[target['met']]:>8}  {target['target']}: {target['figure']}")
    failed = [part for part in PARTS if "error" in document.get(part, {})]
    if failed:
        print(f"parts that failed: {', '.join(failed)}")
    if document["environment"].get("peers_skipped"):
        print(f"peers skipped: {document['environment']['peers_skipped']}")
    print("Figures are quoted as ratios to this run's own bare loop: the machine is shared and "
          "noisy, raw rates move 20-30% between runs.")  # fmt: skip


# --- command line ---


def parse_args(argv: Sequence[str] | None) -> tuple[SuiteSettings, Path | None, str]:
    """The settings, where to write the figures, and the event loop (`--loop`)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite",
        description="Switchyard against a bare Redis loop and Dramatiq, Celery, arq and "
        "taskiq-redis: throughput, latency, priority isolation, memory (bench/README.md).",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, about 2 minutes")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--part", action="append", choices=PARTS, help="run only this part "
                        "(repeatable; default: all)")  # fmt: skip
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="memory part: sample the service this long (default 30, quick 6)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip Dramatiq, Celery, ...")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not create the peers' venv; skip the peers if it is missing",
    )
    parser.add_argument("--peers-venv", type=Path, default=DEFAULT_VENV,
                        help="the peers' venv (default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
        help="this process's event loop, as service.loop (default: auto, uvloop if installed)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = SuiteSettings.quick_run() if args.quick else SuiteSettings()
    settings = replace(
        settings,
        parts=tuple(p for p in PARTS if p in args.part) if args.part else PARTS,
        peers=not args.no_peers,
        install=not args.no_install,
        peers_venv=args.peers_venv,
    )
    if args.soak is not None:
        if args.soak <= 0:
            parser.error("--soak must be positive")
        settings = replace(settings, memory=replace(settings.memory, seconds=args.soak))
    return settings, args.json, args.loop


_signalled: list[int] = []


async def _main(settings: SuiteSettings, json_path: Path | None) -> int:
    task = asyncio.current_task()
    assert task is not None

    def on_sigterm() -> None:
        _signalled.append(signal.SIGTERM)
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    started = time.perf_counter()
    document = await run_suite(settings)
    document["suite_seconds"] = round(time.perf_counter() - started, 1)
    print(f"suite took {document['suite_seconds']:.0f} s")
    if json_path is not None:
        text = json.dumps(document, indent=2) + "\n"
        await asyncio.to_thread(json_path.write_text, text)
        progress(f"wrote {json_path}")
    return 1 if any("error" in document.get(part, {}) for part in settings.parts) else 0


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path, loop = parse_args(argv)
    configure_logging("json", "warning")  # the services' info lines would bury the tables
    try:
        return loops.run(_main(settings, json_path), loops.factory(loop))
    except KeyboardInterrupt:
        progress("interrupted; every process the suite started was stopped")
        return 130
    except asyncio.CancelledError:
        if _signalled:
            progress("terminated; every process the suite started was stopped")
            return 143
        progress("suite failed: its task was cancelled from inside (see the log above)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
