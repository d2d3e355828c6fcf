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
    assert len(dead) == 1 and b"row 0, column 'score'" in dead[0][1][b"featsync:error"]
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
        # The refused entry may already be a dead letter when the kill lands (a slow poll): the
        # two consumers together must write it exactly once.
        dead_at_kill = client.xlen(stream + ":dead")

        second = consumer(pit_duckdb, base, stream, prefix, "--stop-when-idle", "1", "--json")
        out, _ = second.communicate(timeout=300)
        assert second.returncode == 0, out
        stats = json.loads(out[out.index("{") :])
        assert dead_at_kill + stats["dead"] == 1
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


def in_process(project, redis_url: str, stream: str, prefix: str, name: str = "c1", **options) -> StreamConsumer:
    """A consumer in this process, on the online store's Redis (the stream lives there too)."""
    from featsync.online.ingest import RowIngest

    client = redis.Redis.from_url(redis_url)
    ingest = RowIngest(project, client, prefix)
    return StreamConsumer(ingest, client, stream, view="fv_user", to="online_and_offline", consumer=name, **options)


def test_every_refusal_is_a_dead_letter_and_the_good_entries_are_one_write(pit_duckdb, redis_url, tmp_path, monkeypatch):
    """Entries the view refuses for their content (an event or created time outside the years
    1 to 9999 once in UTC, a NUL in text or in a key, a wrong type) are dead letters: the
    consumer neither stops nor is stuck on them, the good entries of the batch are pushed in
    one write (one offline log file), and each dead letter keeps the entry's own fields
    (`error` and `entry` included) beside its own, namespaced ones."""
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    client = redis.Redis.from_url(redis_url)
    stream = f"fs-stream:{uuid.uuid4().hex[:8]}"
    prefix = f"fs-stream:{uuid.uuid4().hex[:8]}"
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()

    def row(user: str, **values) -> dict:
        return {"user_id": user, "event_timestamp": at, "amount": 1, "label": "s", **values}

    entries = [
        {"row": row("good-1")},
        {"row": row("early", event_timestamp="0001-01-01T00:00:00+01:00")},
        {"row": row("late", created_timestamp="9999-12-31T23:59:59-01:00")},
        {"row": row("good-2")},
        {"row": row("nul-text", label="a\x00b")},
        {"row": row("nul\x00key")},
        {"row": row("typed", amount="x"), "error": "the producer's own", "entry": "its own too"},
        {"row": row("good-3")},
    ]
    ids = [client.xadd(stream, {k: json.dumps(v) if k == "row" else v for k, v in e.items()}) for e in entries]
    try:
        stats = in_process(pit_duckdb, redis_url, stream, prefix).run(stop_when_idle=0.5)
        assert (stats.read, stats.pushed, stats.dead) == (8, 3, 5)
        assert client.xpending(stream, "featsync")["pending"] == 0
        dead = {fields[b"featsync:entry"]: fields for _, fields in client.xrange(stream + ":dead")}
        assert sorted(dead) == sorted(ids[i] for i in (1, 2, 4, 5, 6))
        reasons = {i: dead[ids[i]][b"featsync:error"].decode() for i in (1, 2, 4, 5, 6)}
        assert "row 0, column 'event_timestamp': 0000-12-31 23:00:00.000000Z is outside the years 1 to 9999" in reasons[1]
        assert "row 0, column 'created_timestamp': 10000-01-01 00:59:59.000000Z is outside the years 1 to 9999" in reasons[2]
        assert "row 0, column 'label': 'a\\x00b' holds a NUL character" in reasons[4]
        assert "row 0, column 'user_id': 'nul\\x00key' holds a NUL character" in reasons[5]
        assert "row 0, column 'amount': 'x' is not an integer" in reasons[6]
        assert dead[ids[6]][b"error"] == b"the producer's own" and dead[ids[6]][b"entry"] == b"its own too"
        assert json.loads(dead[ids[1]][b"row"]) == entries[1]["row"]
        files = list((tmp_path / "pushed" / "fv_user").glob("*.parquet"))
        assert len(files) == 1
        assert sorted(pq.read_table(files[0]).column("user_id").to_pylist()) == ["good-1", "good-2", "good-3"]
        reader = OnlineReader(pit_duckdb.registry(), client, prefix)
        served = reader.get([{"user_id": u} for u in ("good-1", "good-3", "early", "nul-text")], ["fv_user:label"])
        assert served.features["label"] == ["s", "s", None, None]
    finally:
        client.delete(stream, stream + ":dead")
        cleanup(pit_duckdb, client, prefix)


def test_an_entry_at_a_key_holding_a_foreign_value_is_a_dead_letter(pit_duckdb, redis_url, tmp_path, monkeypatch):
    """A key of the view holds a value featsync did not write: the write script's call that
    meets it writes nothing (featsync.online.push.ForeignValueError). The consumer used to stop
    on it at every restart; now the batch's entries go again one by one, the one at that key is
    a dead letter naming it, and the others are pushed."""
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    client = redis.Redis.from_url(redis_url)
    stream = f"fs-stream:{uuid.uuid4().hex[:8]}"
    prefix = f"fs-stream:{uuid.uuid4().hex[:8]}"
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    consumer = in_process(pit_duckdb, redis_url, stream, prefix)
    foreign_key = consumer.ingest.layout(consumer.ingest.view("fv_user")).key(["fv-foreign"])
    client.set(foreign_key, b"not featsync's")
    users = ["fv-1", "fv-foreign", "fv-2"]
    ids = [
        client.xadd(stream, {"row": json.dumps({"user_id": u, "event_timestamp": at, "amount": 1, "label": "f"})}) for u in users
    ]
    try:
        stats = consumer.run(stop_when_idle=0.5)
        assert (stats.read, stats.pushed, stats.dead) == (3, 2, 1)
        assert client.xpending(stream, "featsync")["pending"] == 0
        ((_, fields),) = client.xrange(stream + ":dead")
        assert fields[b"featsync:entry"] == ids[1]
        assert "is not a featsync value" in fields[b"featsync:error"].decode()
        assert "fv-foreign" in fields[b"featsync:error"].decode()
        assert client.get(foreign_key) == b"not featsync's"  # left as it was
        reader = OnlineReader(pit_duckdb.registry(), client, prefix)
        served = reader.get([{"user_id": "fv-1"}, {"user_id": "fv-2"}], ["fv_user:label"])
        assert served.features["label"] == ["f", "f"]
    finally:
        client.delete(stream, stream + ":dead", foreign_key)
        cleanup(pit_duckdb, client, prefix)


def test_two_consumers_that_handle_one_entry_write_one_dead_letter(pit_duckdb, redis_url, tmp_path, monkeypatch):
    """Consumer A reads a batch and is slow; B claims A's pending entries and handles them; A
    then finishes too. Both handled the refused entry: it has one dead letter."""
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    client = redis.Redis.from_url(redis_url)
    stream = f"fs-stream:{uuid.uuid4().hex[:8]}"
    prefix = f"fs-stream:{uuid.uuid4().hex[:8]}"
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for user, amount in (("cl-1", 1), ("cl-bad", "x"), ("cl-2", 2)):
        client.xadd(stream, {"row": json.dumps({"user_id": user, "event_timestamp": at, "amount": amount, "label": "c"})})
    try:
        a = in_process(pit_duckdb, redis_url, stream, prefix, "A")
        b = in_process(pit_duckdb, redis_url, stream, prefix, "B", claim_idle_ms=0)
        a.ensure_group()
        read_by_a = a._read(">")
        claimed_by_b = b._claim()  # idle for 0 ms or more: B takes them over, as after --claim-idle-ms
        assert [e for e, _ in read_by_a] == [e for e, _ in claimed_by_b] and len(read_by_a) == 3
        b._handle(claimed_by_b)
        a._handle(read_by_a)
        assert client.xlen(stream + ":dead") == 1
        assert (a.stats.dead, b.stats.dead) == (0, 1)
        assert client.xpending(stream, "featsync")["pending"] == 0
    finally:
        client.delete(stream, stream + ":dead")
        cleanup(pit_duckdb, client, prefix)


def test_an_entry_is_never_acknowledged_without_its_dead_letter(redis_url):
    """Settling a batch writes its dead letters and acknowledges its entries in one script,
    which Redis does not roll back when a command in it fails. The dead-letter stream's key
    holding another type (or an ACL without XADD) failed the XADD after the XACK had
    acknowledged the entry: it was neither pending nor a dead letter, lost. Now nothing is
    acknowledged until every dead letter is written; once the key is fixed, the redelivered
    batch settles with one dead letter, and settling it again writes none."""
    client = redis.Redis.from_url(redis_url)
    stream = f"fs-stream:{uuid.uuid4().hex[:8]}"
    consumer = StreamConsumer(None, client, stream, consumer="c1")  # type: ignore[arg-type]  # settling needs no ingest
    consumer.ensure_group()
    good, bad = client.xadd(stream, {"row": "{}"}), client.xadd(stream, {"row": "not json"})
    entries = consumer._read(">")
    dead = [(bad, {b"row": b"not json"}, "the entry's 'row' is not JSON")]
    client.set(stream + ":dead", "not a stream")
    try:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            consumer._settle(entries, dead)
        assert client.xpending(stream, "featsync")["pending"] == 2  # both to be read again
        client.delete(stream + ":dead")
        assert [e for e, _ in consumer._read("0")] == [good, bad]
        consumer._settle(entries, dead)
        consumer._settle(entries, dead)  # handled twice (a claim): one dead letter
        ((_, letter),) = client.xrange(stream + ":dead")
        assert letter == {b"featsync:error": b"the entry's 'row' is not JSON", b"featsync:entry": bad, b"row": b"not json"}
        assert client.xpending(stream, "featsync")["pending"] == 0 and consumer.stats.dead == 1
    finally:
        client.delete(stream, stream + ":dead")
