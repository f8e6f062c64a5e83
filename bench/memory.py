"""Memory: the resident size of a Switchyard process consuming a huge backlog slowly.

The class stream is pre-filled with e.g. 1,000,000 envelopes (server-side XADD loops). Then
`python -m router run` is started as its own process with one class whose actor
(bench.noop:Slow) awaits `delay_ms` per event (paced so that at most half the backlog is
consumed while sampling), so the stream stays far bigger than what the process can take in.
Its RSS (VmRSS from /proc) is sampled every half second; the reader fetching only as many
entries as there are free slots is what must keep it flat.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bench.harness import (
    BenchError,
    checkpoint,
    child,
    fill_stream,
    group_progress,
    log_tail,
    progress,
    rss_mb,
)

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

CLASS = "bench.slow"
GROUP = "bench"
SAMPLE_S = 0.5


@dataclass(frozen=True)
class MemorySettings:
    backlog: int = 1_000_000
    seconds: float = 30.0  # sampling time once consumption started (--soak sets it)
    min_delay_ms: float = 50.0
    concurrency: int = 256
    limit_mb: float = 150.0

    @property
    def delay_ms(self) -> float:
        """The actor's time per event: slow enough that at most half the backlog is consumed
        while sampling, so the process is measured with a huge backlog from start to end."""
        paced = 1000 * self.concurrency * self.seconds * 2 / self.backlog
        return round(max(self.min_delay_ms, paced), 1)


def memory_config(url: str, s: MemorySettings) -> str:
    return f"""
service:
  name: bench-memory
  log_level: warning
  log_format: json
redis:
  url: {url}
  group: {GROUP}
http:
  enabled: false
lanes:
  - name: bench
classes:
  {CLASS}:
    lane: bench
    actor: bench.noop:Slow
    mode: queue
    concurrency: {s.concurrency}
    options: {{delay_ms: {s.delay_ms}}}
"""


async def run_memory(url: str, admin: Redis, s: MemorySettings, work: Path) -> dict[str, Any]:
    await admin.flushall()
    filled = await fill_stream(url, CLASS, "bench", s.backlog)
    redis_mb = int((await admin.info("memory"))["used_memory"]) / 2**20
    progress(
        f"memory: {s.backlog:,} entries pre-filled in {filled:.1f} s "
        f"(redis uses {redis_mb:,.0f} MB); sampling the service for {s.seconds:.0f} s"
    )
    config = work / "memory.yaml"
    config.write_text(memory_config(url, s))
    log = work / "memory-service.log"
    samples: list[dict[str, float]] = []
    async with child(
        sys.executable, "-m", "router", "run", "--config", config,
        log=log, stdin=False, stdout=False, grace_s=15.0,
    ) as service:  # fmt: skip
        spawned = time.perf_counter()
        while (await group_progress(admin, CLASS, GROUP))[0] == 0:
            checkpoint()
            if service.returncode is not None or time.perf_counter() - spawned > 60:
                raise BenchError(f"the service did not start consuming:\n{log_tail(log)}")
            await asyncio.sleep(0.05)
        started = time.perf_counter()
        startup = started - spawned
        while (elapsed := time.perf_counter() - started) <= s.seconds:
            checkpoint()
            rss = rss_mb(service.pid)
            if rss is None or service.returncode is not None:
                raise BenchError(f"the service exited:\n{log_tail(log)}")
            processed, lag = await group_progress(admin, CLASS, GROUP)
            samples.append(
                {
                    "t": round(elapsed, 2),
                    "rss_mb": round(rss[0], 1),
                    "hwm_mb": round(rss[1], 1),
                    "processed": processed,
                    "backlog": lag,
                }
            )
            await asyncio.sleep(SAMPLE_S)
        service.terminate()  # SIGTERM: the service drains what it holds and exits
        stopping = time.perf_counter()
        code = await asyncio.wait_for(service.wait(), 30)
        drain_s = time.perf_counter() - stopping
    first, last = samples[0], samples[-1]
    rss_values = [sample["rss_mb"] for sample in samples]
    return {
        "settings": {**asdict(s), "delay_ms": s.delay_ms},
        "fill_seconds": round(filled, 2),
        "redis_used_mb": round(redis_mb, 1),
        "startup_seconds": round(startup, 3),
        "rss_start_mb": first["rss_mb"],
        "rss_max_mb": max(rss_values),
        "rss_end_mb": last["rss_mb"],
        "rss_peak_hwm_mb": last["hwm_mb"],
        "processed": last["processed"],
        "processed_per_s": round(
            (last["processed"] - first["processed"]) / max(1e-9, last["t"] - first["t"]), 1
        ),
        "backlog_at_end": last["backlog"],
        "stop_seconds": round(drain_s, 3),
        "exit_code": code,
        "samples": samples,
    }
