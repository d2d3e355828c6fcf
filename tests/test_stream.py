"""`featsync stream` on a real Redis stream: the consumer is SIGKILLed mid-stream and restarted;
nothing is lost and nothing is doubled, online and in the offline push log."""

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

from featsync.errors import UsageError
from featsync.online.serving import OnlineReader
from featsync.online.stream import StreamSource
from test_push_rows import cleanup

EVENTS = 3000
PAIRS = [(f"s{i % 40}", f"m{i % 7}") for i in range(280)]  # 280 distinct (user, merchant) keys
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def test_stream_urls():
    source = StreamSource.parse("redis://user:pw@127.0.0.1:7300/2/events/v1")
    assert source.url == "redis://user:pw@127.0.0.1:7300/2" and source.stream == "events/v1"
    for bad in ("redis://127.0.0.1/events", "redis://127.0.0.1:6379/0", "http://h/0/s"):
        with pytest.raises(UsageError):
            StreamSource.parse(bad)


def consumer(project, redis_url: str, stream: str, prefix: str, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "featsync", "stream", "--project-dir", str(project.project_dir), "--target", "duckdb"]
    args += ["--from", f"{redis_url}/{stream}"]
    args += ["--select", "fv_pair", "--redis-url", redis_url, "--key-prefix", prefix, "--to", "online_and_offline"]
    args += ["--batch", "100", "--consumer", "c1", "--log-level", "warning", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())


def test_a_killed_consumer_loses_nothing_and_doubles_nothing(pit_duckdb, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    client = redis.Redis.from_url(redis_url)
    stream = f"featsync-pushapi-{uuid.uuid4().hex[:8]}-events"
    prefix = f"featsync-pushapi-{uuid.uuid4().hex[:8]}"
    base = redis_url if redis_url.count("/") == 3 else redis_url.rstrip("/") + "/0"
    try:
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

        first = consumer(pit_duckdb, base, stream, prefix)
        folder = tmp_path / "pushed" / "fv_pair"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(folder.glob("*.parquet"))) < 5:
            assert first.poll() is None, first.stdout.read()
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        acked_at_kill = len(list(folder.glob("*.parquet")))
        assert 5 <= acked_at_kill < EVENTS // 100, "the kill must land mid-stream"

        second = consumer(pit_duckdb, base, stream, prefix, "--stop-when-idle", "1", "--json")
        out, _ = second.communicate(timeout=300)
        assert second.returncode == 0, out
        stats = json.loads(out[out.index("{") :])
        assert stats["dead"] == 1

        # Online: every key holds its newest event (nothing lost, nothing older won).
        newest = {}
        for row in events:
            newest[(row["user_id"], row["merchant_id"])] = row["score"]
        reader = OnlineReader(pit_duckdb.registry(), client, prefix)
        keys = sorted(newest)
        response = reader.get([{"user_id": u, "merchant_id": m} for u, m in keys], ["fv_pair:score"])
        assert response.features["score"] == [newest[k] for k in keys]
        # The group has acknowledged everything.
        assert client.xpending(stream, "featsync")["pending"] == 0
        dead = client.xrange(stream + ":dead")
        assert len(dead) == 1 and b"row 0, column 'score'" in dead[0][1][b"error"]
        # Offline: every event exactly once after the (user, merchant, event time) dedup the model
        # applies; replays are bounded by the one batch in flight at the kill.
        logged = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
        distinct = {(r["user_id"], r["merchant_id"], r["event_timestamp"], r["score"]) for r in logged}
        expected = {
            (r["user_id"], r["merchant_id"], datetime.fromisoformat(r["event_timestamp"]).replace(tzinfo=None), r["score"])
            for r in events
        }
        assert distinct == expected
        assert len(logged) - EVENTS <= 100
    finally:
        client.delete(stream, stream + ":dead")
        cleanup(pit_duckdb, client, prefix)
