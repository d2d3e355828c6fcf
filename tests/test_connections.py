"""The server's lean MGET client (connections.AsyncMget) against real Redis servers: same answers as
redis-py, pipelined under concurrency, AUTH and SELECT, and clean failures (lost, hung, refused)."""

from __future__ import annotations

import asyncio
import signal
import uuid

import pytest
import redis

from featsync.online.connections import AsyncMget, async_mget
from test_push import free_port, private_redis, start_redis  # noqa: F401 (fixture)


def run(coro):
    return asyncio.run(coro)


def test_same_answers_as_redis_py_pipelined_on_few_connections(redis_url):
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-perf-{uuid.uuid4().hex[:8]}:"
    keys = [f"{prefix}{i}".encode() for i in range(200)]
    client.mset({key: b"v\x00\xff" + key for key in keys[::2]})  # every other key exists; binary values
    try:
        requests = [[keys[(i * 7 + j) % 200] for j in range(i % 5 + 1)] for i in range(300)]

        async def main():
            mget = async_mget(redis_url, 1.0)
            try:
                answers = await asyncio.gather(*(mget.mget(r) for r in requests))
                return answers, len(mget.connections)
            finally:
                await mget.aclose()

        answers, connections = run(main())
        assert answers == [client.mget(r) for r in requests]
        assert None in answers[1] and answers[0] == [b"v\x00\xff" + keys[0]]
        assert 1 <= connections <= 4  # 300 concurrent reads share a small pool, pipelined
    finally:
        client.delete(*keys)


def test_auth_select_and_wrong_password(tmp_path):
    port = free_port()
    rules = ["--user", "default", "off", "--user", "reader", "on", ">s3 cret", "~*", "&*", "+@all"]
    proc = start_redis(port, tmp_path, *rules, username="reader", password="s3 cret")
    try:
        redis.Redis(port=port, db=3, username="reader", password="s3 cret").set("k", "in db 3")

        async def read(url):
            mget = async_mget(url, 1.0)
            try:
                return await mget.mget([b"k"])
            finally:
                await mget.aclose()

        assert run(read(f"redis://reader:s3%20cret@127.0.0.1:{port}/3")) == [b"in db 3"]
        assert run(read(f"redis://reader:s3%20cret@127.0.0.1:{port}/0")) == [None]
        with pytest.raises(redis.ConnectionError, match="AUTH failed: .*(WRONGPASS|invalid)"):
            run(read(f"redis://reader:wrong@127.0.0.1:{port}/0"))
    finally:
        proc.kill()
        proc.wait()


def test_lost_hung_and_refused_then_recovers(private_redis):  # noqa: F811
    port, servers, start = private_redis
    redis.Redis(port=port).set("k", "1")

    async def main():
        mget = async_mget(f"redis://127.0.0.1:{port}/0", 0.3)
        try:
            assert await mget.mget([b"k"]) == [b"1"]
            servers[-1].send_signal(signal.SIGSTOP)  # hung: a caller's deadline, then the client's own
            try:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await mget.mget([b"k"])
                with pytest.raises(TimeoutError, match="no answer from Redis within 0.3 s"):
                    await mget.mget([b"k"])
            finally:
                servers[-1].send_signal(signal.SIGCONT)
            assert all(c.closed and not c.pending for c in mget.connections)  # dropped, never read again
            redis.Redis(port=port).set("k", "2")
            assert await mget.mget([b"k"]) == [b"2"]  # a fresh connection, no stale reply
            servers[-1].kill()
            servers[-1].wait()
            for _ in range(2):  # lost, then refused: redis-py's exception type each time
                with pytest.raises(redis.ConnectionError):
                    await mget.mget([b"k"])
            servers.append(start())
            assert await mget.mget([b"k"]) == [None]  # the new server is empty
        finally:
            await mget.aclose()

    run(main())


def test_a_cancelled_read_leaves_the_replies_after_it_to_their_callers(redis_url):
    client = redis.Redis.from_url(redis_url)
    key = f"featsync-perf-{uuid.uuid4().hex[:8]}"
    client.set(key, "mine")

    async def main():
        mget = AsyncMget(redis_url, 1.0, 1.0, size=1)  # one connection: every read pipelined on it
        try:
            cancelled = asyncio.ensure_future(mget.mget([key.encode()]))
            await asyncio.sleep(0)  # sent; its reply not read yet
            cancelled.cancel()
            after = await asyncio.gather(mget.mget([b"featsync-perf-absent"]), mget.mget([key.encode(), b"x"]))
            return after, len(mget.connections), mget.connections[0].closed
        finally:
            await mget.aclose()

    try:
        assert run(main()) == ([[None], [b"mine", None]], 1, False)
    finally:
        client.delete(key)


def test_tls_urls_keep_redis_py_and_a_cluster_gets_a_lean_client_per_master():
    from featsync.online.cluster import AsyncClusterMget

    assert async_mget("rediss://127.0.0.1:6380/0", 1.0) is None
    assert async_mget("rediss+cluster://127.0.0.1:7000", 1.0) is None
    assert async_mget("unix:///tmp/redis.sock", 1.0) is not None
    cluster = async_mget("redis+cluster://me:p%40ss@127.0.0.1:7000/0", 1.0)
    assert isinstance(cluster, AsyncClusterMget)
    node = cluster._node(("10.0.0.2", 7001))  # a master's client keeps the URL's user and password
    assert (node.host, node.port, node.setup) == ("10.0.0.2", 7001, [("AUTH", "me", "p@ss")])
