"""Benchmark: POST /push beside a plain redis-py pipeline of the same rows, measured in one run.

    .venv/bin/python bench/push_api.py
    FEATSYNC_BENCH_REDIS_URL=redis://host:port/0 ...  (default redis://127.0.0.1:6379/0)

A scratch dbt project (featsync as a local package, parsed only: pushing needs no
warehouse) declares one online view of 5 features (user_id; 3 floats, 1 int, 1 text).
`featsync serve --workers 2` serves it under a key prefix of its own, deleted at the end.

1. Throughput: --requests POST /push bodies of 1,000 rows each (distinct users, event
   times newer than what is stored, so every row is written), sent by --clients threads
   with keep-alive connections. Baseline: the same rows (the same keys and encoded
   values) written by a plain redis-py pipeline of `SET key value PXAT t`, 1,000 per
   execute, from the same number of threads. Targets: >= 50,000 rows/s.
2. One row: --single sequential POST /push of one row; p50 / p99. Baselines: a plain
   redis-py one-row pipeline (`SET key value PXAT t`, execute) and a bare `SET` round trip
   per row from the same client, and a one-entity POST /get-online-features on the same
   server (what HTTP and the server cost by themselves). Target: p99 <= 2 ms.
3. In-process, one row: --inprocess FeatureStore.push calls (RowIngest.push: the row path of
   featsync.online.row_push, Redis round trip included) beside the batch path for the same
   rows (conform + encode_pushed + pack_writes, what a one-row push cost before the row
   path) and the redis-py one-row pipeline; p50 / p99 and ratios.
4. --sizes: the encoding alone (no Redis) of requests of 1 to 64 rows by both paths, per
   request: where the row path stops paying (the row path is capped at SMALL_ROWS; it is
   lifted here for the measurement only).

The machine is shared: the load average is printed at the start and the end; compare the
ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import pyarrow as pa
import redis

from featsync.online.ingest import RowIngest
from featsync.online.push import encode_pushed
from featsync.online.rows import conform
from featsync.online.state import layout_of
from featsync.project import Project

ROOT = Path(__file__).resolve().parent.parent
VIEW = "bench_push"
PROJECT = """
name: featsync_push_bench
version: "1.0.0"
config-version: 2
profile: featsync_push_bench
"""
PROFILES = """
featsync_push_bench:
  target: dev
  outputs:
    dev: {type: duckdb, path: "%s", schema: main, threads: 1}
"""
MODEL = """
select 'u' as user_id, current_timestamp::timestamp as event_timestamp, 1.0 as amount_sum_7d,
  1.0 as amount_avg_30d, 1.0 as amount_max_30d, 1 as txn_count_7d, 'a' as tier
"""
YAML = """
models:
  - name: bench_push
    config:
      meta:
        feature_view: {entities: [user_id], timestamp: event_timestamp, ttl: 30d, online: true}
    columns:
      - {name: user_id, data_type: text}
      - {name: event_timestamp, data_type: timestamp}
      - {name: amount_sum_7d, data_type: double}
      - {name: amount_avg_30d, data_type: double}
      - {name: amount_max_30d, data_type: double}
      - {name: txn_count_7d, data_type: bigint}
      - {name: tier, data_type: text}
"""


def scratch_project(root: Path) -> Project:
    project = root / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(PROJECT)
    (project / "profiles.yml").write_text(PROFILES % (root / "bench.duckdb"))
    (project / "models" / "bench_push.sql").write_text(MODEL)
    (project / "models" / "bench_push.yml").write_text(YAML)
    opened = Project.open(project, project, "dev")
    opened.registry()  # dbt parse, once
    return opened


def columns(users: list[str], at: datetime, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    n = len(users)
    return {
        "user_id": users,
        "event_timestamp": [at.isoformat().replace("+00:00", "Z")] * n,
        "amount_sum_7d": rng.random(n).round(4).tolist(),
        "amount_avg_30d": rng.random(n).round(4).tolist(),
        "amount_max_30d": rng.random(n).round(4).tolist(),
        "txn_count_7d": rng.integers(0, 100, n).tolist(),
        "tier": rng.choice(["gold", "silver", "bronze"], n).tolist(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project: Project, redis_url: str, prefix: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "featsync", "serve", "--project-dir", str(project.project_dir), "--target", "dev"]
    args += ["--redis-url", redis_url, "--key-prefix", prefix, "--port", str(port), "--workers", str(workers)]
    args += ["--max-batch", "1000", "--log-level", "warning"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("featsync serve did not start")


def run_threads(clients: int, work: list, send) -> float:
    """Seconds for `clients` threads to send every item of `work` (round robin)."""
    barrier = threading.Barrier(clients + 1)

    def worker(items: list) -> None:
        barrier.wait()
        for item in items:
            send(item)

    threads = [threading.Thread(target=worker, args=(work[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def percentiles(samples: list[float]) -> str:
    a = np.array(samples) * 1000
    return f"p50 {np.percentile(a, 50):.3f} ms, p99 {np.percentile(a, 99):.3f} ms"


class RawClient:
    """HTTP/1.1 POSTs on one keep-alive socket, with no client library: what a request costs
    the server and the network, without httpx's own time (a few hundred microseconds)."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{host}:{port}"

    def post(self, path: str, body: bytes) -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        self.sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        header, _, rest = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in header.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += self.sock.recv(65536)
        if not header.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"{path} answered {header.splitlines()[0]!r}: {rest!r}")
        return rest


def ratios(ours: list[float], theirs: list[float]) -> str:
    p50, p99 = (np.percentile(ours, q) / np.percentile(theirs, q) for q in (50, 99))
    return f"p50 {p50:.2f}, p99 {p99:.2f}"


def in_process(project: Project, client: redis.Redis, prefix: str, view, now: datetime, n: int, pipeline, singles) -> None:
    """One-row pushes in this process (no HTTP): the row path (FeatureStore.push's RowIngest),
    the batch path on the same rows, and the redis-py one-row pipeline, alternating."""
    ingest = RowIngest(project, client, prefix)
    layout = ingest.layout(view)
    rows = [columns([f"inproc{i}"], now - timedelta(minutes=30), i) for i in range(2 * n)]
    ingest.push(VIEW, rows[0])  # warm-up: the script, the view's ownership
    row_path, batch_path, piped = [], [], []
    for i in range(n):
        start = time.perf_counter()
        result = ingest.push(VIEW, rows[2 * i])
        row_path.append(time.perf_counter() - start)
        start = time.perf_counter()
        checked, table, _ = ingest.prepare(VIEW, rows[2 * i + 1], "online")
        stats = ingest.pusher().push_rows(checked, table, layout)
        batch_path.append(time.perf_counter() - start)
        if result.online.keys_written + stats.keys_written != 2:
            raise SystemExit(f"in-process pushes wrote {result.online} and {stats}")
        key, value, expire = singles[i % len(singles)]
        start = time.perf_counter()
        pipeline([(key, value, expire)])
        piped.append(time.perf_counter() - start)
    print(f"\nin-process, one row, {n} pushes per path, alternating (Redis round trip included)")
    print(f"  row path (FeatureStore.push):  {percentiles(row_path)}")
    print(f"  batch path, same rows:         {percentiles(batch_path)}   (conform + encode_pushed + pack_writes)")
    print(f"  redis-py one-row pipeline:     {percentiles(piped)}   (baseline)")
    print(f"  ratio row path / pipeline:     {ratios(row_path, piped)}")
    print(f"  ratio row path / batch path:   {ratios(row_path, batch_path)}")


def sizes(project: Project, prefix: str, now: datetime) -> None:
    """The encoding alone of requests of 1 to 64 rows by both paths, per request (median of 200)."""
    from featsync.online import row_push
    from featsync.online.push import CHUNK_ROWS, pack_writes
    from featsync.online.validity import epoch_micros

    ingest = RowIngest(project, None, prefix)
    layout = ingest.layout(ingest.view(VIEW))
    sha = "0" * 40
    cap, row_push.SMALL_ROWS = row_push.SMALL_ROWS, 256  # lifted for the measurement only
    try:
        print("\nencoding alone (no Redis), per request, median of 200: rows, row path, batch path, ratio")
        for n in (1, 4, 16, 32, 64, 128, 256):
            df = columns([f"size{i}" for i in range(n)], now - timedelta(minutes=30), n)
            times = {"row": [], "batch": []}
            for _ in range(200):
                start = time.perf_counter()
                _, given, encoded = ingest.encode_small(VIEW, df, "online", now)
                encoded[0].packed(sha)
                times["row"].append(time.perf_counter() - start)
                start = time.perf_counter()
                checked, table, _ = ingest.prepare(VIEW, df, "online", now)
                pack_writes(sha, encode_pushed(layout, table, epoch_micros(now))[0], CHUNK_ROWS)
                times["batch"].append(time.perf_counter() - start)
            row, batch = (np.median(times[k]) * 1e6 for k in ("row", "batch"))
            print(f"  {n:>3} rows   {row:>8.0f} us   {batch:>8.0f} us   {row / batch:.2f}")
    finally:
        row_push.SMALL_ROWS = cap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="POST /push bodies of 1,000 rows")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="server workers")
    parser.add_argument("--single", type=int, default=2000, help="one-row requests")
    parser.add_argument("--inprocess", type=int, default=2000, help="in-process one-row pushes per path")
    parser.add_argument("--sizes", action="store_true", help="also time the encoding of 1 to 64 rows by both paths")
    args = parser.parse_args()
    redis_url = os.environ.get("FEATSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-pushapi-bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="featsync-push-bench-"))
    print(f"load average at start: {os.getloadavg()}")
    project = scratch_project(tmp)
    view = project.registry().feature_views[VIEW]
    layout = layout_of(project.registry(), view, prefix)
    proc, base = start_server(project, redis_url, prefix, args.workers)
    baseline: list = []
    base_keys: list = []
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        users = [f"user{i:07d}" for i in range(args.requests * 1000)]
        # featsync: distinct users per body; the baseline writes other keys of the same sizes.
        bodies = [
            orjson.dumps({"push_source_name": VIEW, "df": columns(users[i * 1000 : (i + 1) * 1000], now - timedelta(hours=1), i)})
            for i in range(args.requests)
        ]
        # The baseline's rows: the same values, encoded by featsync's codec once (not timed).
        baseline = []
        for i in range(args.requests):
            cols = columns([f"base{u}" for u in users[i * 1000 : (i + 1) * 1000]], now - timedelta(hours=1), i)
            rows = encode_pushed(layout, conform(view, cols), time.time_ns() // 1000).rows
            baseline.append(
                list(zip(rows.keys.cast(pa.binary()).to_pylist(), rows.values.to_pylist(), rows.expire_ms.tolist(), strict=True))
            )
        local = threading.local()

        def post(body: bytes) -> None:
            http = getattr(local, "http", None)
            if http is None:
                http = local.http = httpx.Client(base_url=base, timeout=30)
            reply = http.post("/push", content=body, headers={"content-type": "application/json"})
            if reply.status_code != 200:
                raise SystemExit(f"/push answered {reply.status_code}: {reply.text}")

        def pipeline(rows: list) -> None:
            pipe = client.pipeline(transaction=False)
            for key, value, expire in rows:
                pipe.set(key, value, pxat=expire)
            pipe.execute()

        post(bodies[0])  # warm-up: each worker loads the script and the suite on its first push
        pipeline(baseline[0])
        ours = run_threads(args.clients, bodies, post)
        theirs = run_threads(args.clients, baseline, pipeline)
        rows = args.requests * 1000
        print(f"\nthroughput, {args.requests} x 1,000 rows, {args.clients} client threads, {args.workers} server workers")
        print(f"  featsync POST /push:           {rows / ours:>10,.0f} rows/s  ({ours:.2f} s)")
        print(f"  redis-py pipeline (baseline):  {rows / theirs:>10,.0f} rows/s  ({theirs:.2f} s)")
        print(f"  ratio featsync / baseline:     {(rows / ours) / (rows / theirs):.2f}   target >= 50,000 rows/s")

        # The one-row timings below are microseconds: the 200,000 baseline rows (tuples the
        # cyclic collector walks on every full collection) go, and what is left is frozen, as
        # featsync serve's workers freeze what they load (featsync.online.server.create_app).
        singles = baseline[0][: min(args.single, 1000)] * (args.single // 1000 + 1)
        base_keys = [k for rows in baseline for k, _, _ in rows]
        baseline = []
        gc.collect()
        gc.freeze()
        http = httpx.Client(base_url=base, timeout=10)
        one = [
            orjson.dumps({"push_source_name": VIEW, "df": columns([f"single{i}"], now - timedelta(minutes=30), i)})
            for i in range(args.single)
        ]
        raw_one_rows = [
            orjson.dumps({"push_source_name": VIEW, "df": columns([f"raw{i}"], now - timedelta(minutes=30), i)})
            for i in range(args.single)
        ]
        read = orjson.dumps({"features": [f"{VIEW}:amount_sum_7d", f"{VIEW}:tier"], "entities": {"user_id": [users[0]]}})
        raw = RawClient(base)
        ours_one, piped_one, theirs_one, reads, raw_one = [], [], [], [], []
        for i in range(args.single):
            start = time.perf_counter()
            reply = http.post("/push", content=one[i], headers={"content-type": "application/json"})
            ours_one.append(time.perf_counter() - start)
            if reply.status_code != 200 or reply.json()["written"] != 1:
                raise SystemExit(f"/push answered {reply.status_code}: {reply.text}")
            key, value, expire = singles[i]
            start = time.perf_counter()
            pipeline([(key, value, expire)])
            piped_one.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.set(key, value, pxat=expire)
            theirs_one.append(time.perf_counter() - start)
            start = time.perf_counter()
            http.post("/get-online-features", content=read, headers={"content-type": "application/json"})
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            raw.post("/push", raw_one_rows[i])
            raw_one.append(time.perf_counter() - start)
        print(f"\none row, {args.single} sequential requests, alternating with the baselines")
        print(f"  featsync POST /push:           {percentiles(ours_one)}   target p99 <= 2 ms")
        print(f"  redis-py one-row pipeline:     {percentiles(piped_one)}   (baseline)")
        print(f"  redis-py SET:                  {percentiles(theirs_one)}")
        print(f"  same server, one-entity read:  {percentiles(reads)}   (POST /get-online-features)")
        print(f"  POST /push, raw-socket client: {percentiles(raw_one)}   (the server's part, without httpx)")
        print(f"  ratio POST /push / pipeline:   {ratios(ours_one, piped_one)}")
        print(f"  ratio POST /push / read:       {ratios(ours_one, reads)}")
        in_process(project, client, prefix, view, now, args.inprocess, pipeline, singles)
        if args.sizes:
            sizes(project, prefix, now)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        keys = list(client.scan_iter(match=f"{layout.state_key}*", count=10_000))
        for lo in range(0, len(keys), 10_000):
            client.delete(*keys[lo : lo + 10_000])
        base_keys = base_keys or [k for rows in baseline for k, _, _ in rows]
        for lo in range(0, len(base_keys), 10_000):
            client.delete(*base_keys[lo : lo + 10_000])
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
