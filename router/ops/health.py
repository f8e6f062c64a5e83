"""Health as the outside sees it: readiness (can this process take traffic now?) and the
per-class view of /classes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from router.streams.transport import UNAVAILABLE, StreamStats

if TYPE_CHECKING:
    from collections.abc import Mapping

    from router.config import Config
    from router.ingress.mqtt import MqttIngress
    from router.runtime.pool import Pool
    from router.streams.transport import Transport

PROBE_TIMEOUT_S = 1.0


async def readiness_problems(
    transport: Transport, mqtt: MqttIngress | None, pools: Mapping[str, Pool]
) -> list[str]:
    """Why this process should not receive traffic now; empty when ready.

    Redis is asked for a small write, not a PING: a Redis out of memory answers PING.
    """
    problems = []
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await transport.check_writable()
    except UNAVAILABLE as exc:
        problems.append(f"redis unavailable: {type(exc).__name__}: {exc}")
    if mqtt is not None and not mqtt.connected:
        problems.append(f"mqtt broker not connected ({mqtt.url})")
    problems += [f"pool {name} is not running" for name, pool in pools.items() if not pool.running]
    return problems


def class_views(
    config: Config, stats: Mapping[str, StreamStats], pools: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Per class run here or by a lane worker: its pool's view, lane workers, stream length,
    pending and backlog."""
    workers = config.isolated_lanes()
    return {
        name: {
            **pools[name],
            "workers": workers.get(config.classes[name].lane, 0),
            "stream_length": stats.get(name, StreamStats()).length,
            "pending": stats.get(name, StreamStats()).pending,
            "backlog": stats.get(name, StreamStats()).backlog,
            "delayed": stats.get(name, StreamStats()).delayed,
        }
        for name in config.classes
        if name in pools
    }
