"""Redis clients from URLs: one server (`redis://`, `rediss://`, `unix://`) or a Redis Cluster
(`redis+cluster://host:port,host:port`, `rediss+cluster://…`), for the service, its lane
workers and every command alike.

Everything Switchyard sends keeps a class's keys in one slot (hash tags), so the same code
runs on both; a cluster client follows MOVED and ASK on its own. Both connect with
`router.streams.connection`'s classes, so a closed socket is a lost connection on any loop.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from router.redaction import redact_url
from router.streams.connection import lost_when_closed

RedisClient = Redis | RedisCluster
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
TLS_SETTINGS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")  # read from a cluster URL's query


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def connect(url: str, *, max_connections: int = 64, **options: Any) -> RedisClient:
    """A client for `url`; `options` are redis-py connection settings (timeouts, retry).

    A single server gets a blocking pool of `max_connections` (a caller waits for a free
    connection rather than failing); a cluster, `max_connections` per node.
    """
    if is_cluster(url):
        return _cluster(url, max_connections, options)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=10, **options
    )
    pool.connection_class = lost_when_closed(pool.connection_class)  # the URL's kind, ours
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


def _cluster(url: str, max_connections: int, options: dict[str, Any]) -> RedisCluster:
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes = [_node(host) for host in hosts.split(",") if host]
    if not nodes:
        raise ValueError(f"{redact_url(url)}: a cluster URL names at least one host:port")
    settings = {k: v for k, v in parse_qsl(parts.query) if k in TLS_SETTINGS}
    cluster = RedisCluster(
        startup_nodes=nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=parts.scheme.startswith("rediss"),
        max_connections=max_connections,
        **{**settings, **options},
    )
    _connect_nodes_with_ours(cluster)
    return cluster


def _connect_nodes_with_ours(cluster: RedisCluster) -> None:
    """The cluster client takes no connection class: it picks redis-py's own and keeps it in
    the settings every node it finds is made with (and in the startup nodes, made already)."""
    settings = cluster.connection_kwargs
    ours = lost_when_closed(settings["connection_class"])
    settings["connection_class"] = ours
    for node in cluster.nodes_manager.startup_nodes.values():
        node.connection_class = ours


def _node(text: str) -> ClusterNode:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    return ClusterNode(host or text, int(port) if port else DEFAULT_PORT)
