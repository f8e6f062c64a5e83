"""A local Redis Cluster of a few masters, each an `EmbeddedRedis` on a free port.

For the tests and benchmarks that run Switchyard against a real cluster on one machine, and
for trying `redis+cluster://` locally. The cluster is formed over the wire (each node takes an
even share of the 16,384 slots and a config epoch of its own, then meets the first), so no
`redis-cli` is needed. A node's `nodes.conf` lives in its data dir: a stopped cluster comes
back formed on the same ports.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.embedded.process import HOST, free_port
from router.embedded.redis import EmbeddedRedis
from router.errors import EmbeddedServerError

if TYPE_CHECKING:
    from pathlib import Path

SLOTS = 16_384
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10,000
MAX_PORT = 65_535
FORM_TIMEOUT_S = 20.0


class EmbeddedCluster:
    """`masters` redis-servers in cluster mode, with no replicas."""

    def __init__(
        self,
        data_dir: Path,
        *,
        masters: int = 3,
        appendonly: bool = False,
        full_coverage: bool = True,
    ) -> None:
        """`full_coverage=False` lets the nodes still up serve their slots while one is down
        (Redis's `cluster-require-full-coverage no`); by default the whole cluster stops."""
        options = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
        if not full_coverage:
            options += ["--cluster-require-full-coverage", "no"]
        self.nodes = [
            EmbeddedRedis(
                data_dir / f"node{index}", port=port, appendonly=appendonly, options=options
            )
            for index, port in enumerate(_node_ports(masters))
        ]

    @property
    def url(self) -> str:
        """`redis+cluster://127.0.0.1:<port>,…`: every node, so any one can be down at start."""
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [_port(node) for node in self.nodes]

    async def start(self) -> None:
        """Start every node, then form the cluster unless it was formed before."""
        await asyncio.gather(*(node.start() for node in self.nodes))
        try:
            if await self._unformed():
                await self._form()
            await self.wait_ok()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes if node.pid is not None))

    async def flush(self) -> None:
        """Empty every master (this cluster is ours to empty)."""
        for port in self.ports:
            async with _client(port) as client:
                await client.flushall()

    async def wait_ok(self, timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Wait until every running node sees all slots served and every node known."""
        try:
            async with asyncio.timeout(timeout_s):
                while not await self._formed():  # noqa: ASYNC110 - polling another process
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise EmbeddedServerError(
                f"the local Redis Cluster did not form within {timeout_s:.0f} s"
            ) from None

    async def _formed(self) -> bool:
        for node in self.nodes:
            if node.pid is None:
                continue
            info = await _cluster_info(_port(node))
            ok = info.get("cluster_state") == "ok"
            if not ok or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return True

    async def _unformed(self) -> bool:
        """True for new nodes: the first serves no slot yet (a restarted one remembers)."""
        info = await _cluster_info(self.ports[0])
        return int(info.get("cluster_slots_assigned", 0)) == 0

    async def _form(self) -> None:
        share = SLOTS // len(self.nodes)
        for index, port in enumerate(self.ports):
            first = index * share
            last = SLOTS - 1 if index == len(self.nodes) - 1 else first + share - 1
            await _cluster(port, "ADDSLOTS", *range(first, last + 1))
            await _cluster(port, "SET-CONFIG-EPOCH", index + 1)
        for port in self.ports[1:]:
            await _cluster(self.ports[0], "MEET", HOST, port)


def _node_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (the port + 10,000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + BUS_OFFSET <= MAX_PORT and port not in ports and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port(node: EmbeddedRedis) -> int:
    if node.port is None:
        raise EmbeddedServerError("a cluster node has no port yet: call start() first")
    return node.port


def _client(port: int) -> Redis:
    return Redis(host=HOST, port=port, socket_connect_timeout=1.0, socket_timeout=2.0)


async def _cluster(port: int, *args: str | int) -> Any:
    """One CLUSTER subcommand sent to one node."""
    async with _client(port) as client:
        return await client.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]


async def _cluster_info(port: int) -> dict[str, str]:
    """CLUSTER INFO of one node as a dict; empty while the node does not answer."""
    try:
        reply = await _cluster(port, "INFO")
    except RedisError:
        return {}
    return dict(line.split(":", 1) for line in _text(reply).splitlines() if ":" in line)


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
