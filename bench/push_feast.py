"""Benchmark: POST /push on featsync serve beside Feast 0.67's `feast serve`, same rows, same Redis, one run.

    .venv/bin/python bench/push_feast.py [--single 1000] [--batches 20] [--feast-python PATH]

Both servers push into one private redis-server (a port of its own, nothing kept on disk),
so neither's keys mix with anything else: featsync serve --workers 2 on bench/push_api.py's
scratch view (user_id; 3 floats, 1 int, 1 text), and `feast serve --workers 2` on a Feast
repository declaring the same view with a PushSource, Redis online store. Feast runs from its
own venv (its pins clash with featsync's): --feast-python, else $FEAST_PYTHON, else
.venv-feast/bin/python (`make feast-venv`).

1. One row: --single requests of one row to each server, alternating, from one keep-alive
   httpx client; p50 / p99 and the ratio.
2. Batches: --batches requests of 1,000 rows to each, sequential; rows/s and the ratio.

The rows are the same for both (the same JSON `df` in Feast's request shape); each request's
event time is newer than the last, so every row is written by both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_api import VIEW, columns, free_port, percentiles, ratios, scratch_project, start_server  # noqa: E402
from startup import feast_python  # noqa: E402
from workspace import private_redis  # noqa: E402

REDIS_PORT = 32031  # the private redis-server's port
FEATURE_STORE = """\
project: featsync_push_bench
registry: {root}/registry.db
provider: local
online_store:
  type: redis
  connection_string: "127.0.0.1:{port},db=0"
offline_store:
  type: file
entity_key_serialization_version: 3
"""
FEAST_REPO = """\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
batch = FileSource(name="bench_push_batch", path="{parquet}", timestamp_field="event_timestamp")
push = PushSource(name="bench_push", batch_source=batch)
bench_push = FeatureView(
    name="bench_push",
    entities=[user],
    ttl=timedelta(days=30),
    schema=[
        Field(name="amount_sum_7d", dtype=Float64),
        Field(name="amount_avg_30d", dtype=Float64),
        Field(name="amount_max_30d", dtype=Float64),
        Field(name="txn_count_7d", dtype=Int64),
        Field(name="tier", dtype=String),
    ],
    source=push,
    online=True,
)
"""


def start_feast(python: str, root: Path, redis_port: int) -> tuple[subprocess.Popen, str]:
    """`feast apply` then `feast serve --workers 2` on a repository of the bench view; (process, base URL)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = root / "feast_repo"
    repo.mkdir()
    parquet = root / "bench_push.parquet"
    now = datetime.now(UTC)
    sample = {k: v for k, v in columns(["u0"], now, 0).items() if k != "event_timestamp"}
    pq.write_table(pa.table({**sample, "event_timestamp": pa.array([now], pa.timestamp("us", tz="UTC"))}), parquet)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE.format(root=root, port=redis_port))
    (repo / "features.py").write_text(FEAST_REPO.format(parquet=parquet))
    feast = str(Path(python).parent / "feast")
    env = {**os.environ, "FEAST_USAGE": "False"}
    subprocess.run([feast, "-c", str(repo), "apply"], env=env, check=True, capture_output=True)
    port = free_port()
    args = [feast, "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port), "--workers", "2", "--no-access-log"]
    args += ["--max-requests", "1000000"]  # no worker restarts mid-run (its default is every 1,000 requests)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("feast serve did not start")


def post(http: httpx.Client, body: bytes) -> float:
    start = time.perf_counter()
    reply = http.post("/push", content=body, headers={"content-type": "application/json"})
    took = time.perf_counter() - start
    if reply.status_code != 200:
        raise SystemExit(f"{http.base_url}/push answered {reply.status_code}: {reply.text[:500]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=1000, help="one-row requests to each server")
    parser.add_argument("--batches", type=int, default=20, help="1,000-row requests to each server")
    parser.add_argument("--feast-python", default=None, help="python of a venv with feast[redis]==0.67.*")
    args = parser.parse_args()
    python = feast_python(args.feast_python)
    if python is None:
        raise SystemExit("no venv with feast: pass --feast-python or run make feast-venv")
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="featsync-push-feast-") as tmp, private_redis(REDIS_PORT) as url:
        root = Path(tmp)
        project = scratch_project(root)
        ours_proc, ours = start_server(project, url, "featsync-push-feast", 2)
        theirs_proc, theirs = start_feast(python, root, REDIS_PORT)
        try:
            clients = {name: httpx.Client(base_url=base, timeout=60) for name, base in (("featsync", ours), ("feast", theirs))}
            start = datetime.now(UTC) - timedelta(days=1)
            for http in clients.values():  # warm-up: each worker's first request loads what it needs
                for i in range(20):
                    post(http, push_body([f"warm{i}"], start, i))
            one: dict[str, list[float]] = {name: [] for name in clients}
            for i in range(args.single):
                body = push_body([f"single{i}"], start + timedelta(seconds=i), i)
                for name, http in clients.items():
                    one[name].append(post(http, body))
            print(f"\none row, {args.single} requests to each server, alternating")
            print(f"  featsync serve POST /push:      {percentiles(one['featsync'])}")
            print(f"  feast serve POST /push:         {percentiles(one['feast'])}   (Feast 0.67)")
            print(f"  ratio featsync / Feast:         {ratios(one['featsync'], one['feast'])}")
            users = [f"user{i:07d}" for i in range(1000)]
            seconds = {name: 0.0 for name in clients}
            for b in range(args.batches):
                body = push_body(users, start + timedelta(hours=1, seconds=b), b)
                for name, http in clients.items():
                    seconds[name] += post(http, body)
            rows = args.batches * 1000
            print(f"\nbatches, {args.batches} x 1,000 rows to each server, sequential")
            print(f"  featsync serve POST /push:      {rows / seconds['featsync']:>10,.0f} rows/s")
            print(f"  feast serve POST /push:         {rows / seconds['feast']:>10,.0f} rows/s   (Feast 0.67)")
            print(f"  ratio featsync / Feast:         {seconds['feast'] / seconds['featsync']:.2f}")
            keys = redis.Redis.from_url(url).dbsize()
            print(f"\nkeys in the private Redis: {keys:,} (both servers' rows and state)")
        finally:
            for proc in (ours_proc, theirs_proc):
                proc.terminate()
                proc.wait(timeout=60)
    print(f"\nload average at end: {os.getloadavg()}")


def push_body(users: list[str], at: datetime, seed: int) -> bytes:
    """One request in Feast's /push shape (which featsync serve takes as is)."""
    return orjson.dumps({"push_source_name": VIEW, "df": columns(users, at, seed), "to": "online"})


if __name__ == "__main__":
    main()
