"""`featsync stream` on a real Redis stream: the consumer is SIGKILLed mid-stream and restarted,
or its Redis is (a private redis-server, durable, killed and started again under a running
consumer); either way nothing is lost and nothing is doubled, online and in the offline push log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
import redis

from featsync.errors import FeatsyncError, UsageError
from featsync.online.rows import PushRowsError
from featsync.online.serving import OnlineReader
from featsync.online.stream import StreamConsumer, StreamSource, transient
from test_push import free_port, start_redis
from test_push_rows import cleanup

EVENTS = 3000
PAIRS = [(f"s{i % 40}", f"m{i % 7}") for i in range(280)]  # 280 distinct (user, merchant) keys
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def private_port() -> int:
    """A free loopback port for a private redis-server: in FEATSYNC_TEST_PORTS (`FIRST-LAST`)
    when set (machines whose port ranges are shared out), else one the kernel picks."""
    import socket

    span = os.environ.get("FEATSYNC_TEST_PORTS")
    if not span:
        return free_port()
    first, last = (int(x) for x in span.split("-"))
    for port in range(first, last + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in FEATSYNC_TEST_PORTS={span}")


def test_stream_urls():
    source = StreamSource.parse("redis://user:pw@127.0.0.1:7300/2/events/v1")
    assert source.url == "redis://user:pw@127.0.0.1:7300/2" and source.stream == "events/v1"
    for bad in ("redis://127.0.0.1/events", "redis://127.0.0.1:6379/0", "http://h/0/s"):
        with pytest.raises(UsageError):
            StreamSource.parse(bad)


def consumer(project, redis_url: str, stream: str, prefix: str, *extra: str, stderr: int = subprocess.STDOUT) -> subprocess.Popen:
    args = [sys.executable, "-m", "featsync", "stream", "--project-dir", str(project.project_dir), "--target", "duckdb"]
    args += ["--from", f"{redis_url}/{stream}"]
    args += ["--select", "fv_pair", "--redis-url", redis_url, "--key-prefix", prefix, "--to", "online_and_offline"]
    args += ["--batch", "100", "--consumer", "c1", "--log-level", "warning", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=os.environ.copy())


def add_events(client: redis.Redis, stream: str) -> list[dict]:
    """EVENTS rows over the PAIRS keys, one second apart, plus one entry the view refuses (a dead letter)."""
    events = []
    pipe = client.pipeline(transaction=False)
    for seq in range(EVENTS):
        user, merchant = PAIRS[seq % len(PAIRS)]
        at = START + timedelta(seconds=seq)
        row = {"user_id": user, "merchant_id": merchant, "event_timestamp": at.isoformat(), "score": float(seq)}
        events.append(row)
        pipe.xadd(stream, {"row": json.dumps(row)})
        if seq == 1234:  # one entry the view refuses: a dead letter, not a stuck stream
            pipe.xadd(stream, {"row": json.dumps({**row, "score": "high"})})
    pipe.execute()
    return events


def wait_for_log_files(proc: subprocess.Popen, folder, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(folder.glob("*.parquet"))) < count:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)


def assert_each_event_once(project, client: redis.Redis, stream: str, prefix: str, events: list[dict], folder) -> None:
    """Online every key holds its newest event; the group acknowledged everything; one dead
    letter; offline every event exactly once after the model's (keys, event time) dedup, with
    replays bounded by the one batch in flight at the failure."""
    newest = {}
    for row in events:
        newest[(row["user_id"], row["merchant_id"])] = row["score"]
    reader = OnlineReader(project.registry(), client, prefix)
    keys = sorted(newest)
    response = reader.get([{"user_id": u, "merchant_id": m} for u, m in keys], ["fv_pair:score"])
    assert response.features["score"] == [newest[k] for k in keys]
    assert client.xpending(stream, "featsync")["pending"] == 0
    dead = client.xrange(stream + ":dead")
    assert len(dead) == 1 and b"row 0, column 'score'" in dead[0][1][b"error"]
    logged = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    distinct = {(r["user_id"], r["merchant_id"], r["event_timestamp"], r["score"]) for r in logged}
    expected = {
        (r["user_id"], r["merchant_id"], datetime.fromisoformat(r["event_timestamp"]).replace(tzinfo=None), r["score"])
        for r in events
    }
    assert distinct == expected
    assert len(logged) - EVENTS <= 100


def test_a_killed_consumer_loses_nothing_and_doubles_nothing(pit_duckdb, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    client = redis.Redis.from_url(redis_url)
    stream = f"featsync-pushapi-{uuid.uuid4().hex[:8]}-events"
    prefix = f"featsync-pushapi-{uuid.uuid4().hex[:8]}"
    base = redis_url if redis_url.count("/") == 3 else redis_url.rstrip("/") + "/0"
    try:
        events = add_events(client, stream)
        first = consumer(pit_duckdb, base, stream, prefix)
        folder = tmp_path / "pushed" / "fv_pair"
        wait_for_log_files(first, folder, 5)
        first.send_signal(signal.SIGKILL)
        first.wait()
        acked_at_kill = len(list(folder.glob("*.parquet")))
        assert 5 <= acked_at_kill < EVENTS // 100, "the kill must land mid-stream"

        second = consumer(pit_duckdb, base, stream, prefix, "--stop-when-idle", "1", "--json")
        out, _ = second.communicate(timeout=300)
        assert second.returncode == 0, out
        stats = json.loads(out[out.index("{") :])
        assert stats["dead"] == 1
        assert_each_event_once(pit_duckdb, client, stream, prefix, events, folder)
    finally:
        client.delete(stream, stream + ":dead")
        cleanup(pit_duckdb, client, prefix)


def test_the_consumer_rides_out_a_redis_restart(pit_duckdb, tmp_path, monkeypatch):
    """The stream and the online store on a private, durable redis-server (AOF, fsync always),
    SIGKILLed while the consumer runs and started again a moment later: the consumer logs the
    outage, retries with backoff instead of exiting, re-reads its pending entries, and ends
    with every event once."""
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    workdir = tmp_path / "redis"
    workdir.mkdir()
    port = private_port()
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    servers = [start_redis(port, workdir, *durable)]
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    stream, prefix = "events", f"featsync-stream-{uuid.uuid4().hex[:8]}"
    try:
        events = add_events(client, stream)
        log = tmp_path / "consumer.log"
        with log.open("w") as stderr:
            proc = consumer(pit_duckdb, url, stream, prefix, "--stop-when-idle", "2", "--json", stderr=stderr)
        folder = tmp_path / "pushed" / "fv_pair"
        wait_for_log_files(proc, folder, 5)
        servers[-1].kill()  # SIGKILL: the batch in flight is neither acknowledged nor answered
        servers[-1].wait()
        assert len(list(folder.glob("*.parquet"))) < EVENTS // 100, "the outage must land mid-stream"
        # Down until the consumer has given up on the client's own retries and says so (without
        # its retries it would exit here), then up again with everything it had persisted.
        deadline = time.monotonic() + 120
        while "unavailable" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0] + log.read_text()
            time.sleep(0.1)
        servers.append(start_redis(port, workdir, *durable))
        out, _ = proc.communicate(timeout=300)
        err = log.read_text()
        assert proc.returncode == 0, out + err
        stats = json.loads(out)
        assert stats["dead"] == 1 and stats["retries"] >= 1
        assert "unavailable" in err and "available again" in err
        assert_each_event_once(pit_duckdb, client, stream, prefix, events, folder)
    finally:
        for server in servers:
            server.kill()
            server.wait()


def test_a_refusal_stops_the_consumer_with_a_clear_error(pit_duckdb, redis_url):
    """Not an outage (the stream key holds a string): no retry, exit non-zero naming it."""
    client = redis.Redis.from_url(redis_url)
    key = f"featsync-pushapi-{uuid.uuid4().hex[:8]}-not-a-stream"
    client.set(key, "x")
    base = redis_url if redis_url.count("/") == 3 else redis_url.rstrip("/") + "/0"
    try:
        proc = consumer(pit_duckdb, base, key, "featsync-pushapi-unused", "--stop-when-idle", "1")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 1, out
        assert f"cannot create consumer group 'featsync' on stream '{key}'" in out and "WRONGTYPE" in out
    finally:
        client.delete(key)


def test_outages_are_told_from_refusals():
    assert transient(FeatsyncError("Redis went away")) is False
    for outage in (
        redis.ConnectionError("refused"),
        redis.TimeoutError(),
        ConnectionResetError(),
        redis.ReadOnlyError("failover"),
    ):
        try:
            try:
                raise outage
            except Exception as exc:
                raise FeatsyncError("featsync's wrapper") from exc
        except FeatsyncError as wrapped:
            assert transient(wrapped), outage

    class OperationalError(Exception):  # a DB-API driver's: a lost warehouse connection
        pass

    assert transient(OperationalError("server closed the connection"))
    assert not transient(redis.AuthenticationError("WRONGPASS"))
    assert not transient(redis.ResponseError("WRONGTYPE"))


def test_an_entry_with_a_lone_surrogate_is_refused_as_not_json():
    """JSON can spell a lone surrogate ("\\ud800") and a producer can send its UTF-8-like bytes;
    orjson refuses both, so the entry is a dead letter with a message that is itself UTF-8,
    never a str that cannot be encoded reaching the push (which refuses one too, naming the
    row: tests/test_row_push.py)."""
    consumer = StreamConsumer(None, None, "s", view="fv_user")  # parsing an entry needs neither Redis nor a project
    for raw in (b'{"user_id": "\\ud800", "amount": 1}', b'{"user_id": "\xed\xa0\x80"}', b'{"\\udfff": 1}'):
        with pytest.raises(PushRowsError, match="the entry's 'row' is not JSON") as refused:
            consumer._row({b"row": raw})
        str(refused.value).encode()
